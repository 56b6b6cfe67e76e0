"""Admin registrations; imported by newsletter/admin.py."""
