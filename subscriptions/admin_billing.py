"""Admin for plans, memberships, donations and Stripe events; imported by admin.py."""
