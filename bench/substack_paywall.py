"""Time to convert Substack post bodies built to be slow (unclosed `paywall-jump` divs).

    .venv/bin/python bench/substack_paywall.py [--sizes 1000,2000,4000,8000]

Prints seconds per body and the ratio to the previous size: about 2 when the size
doubles means linear time. Needs no database. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from substack.services import convert_post_body  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,4000,8000")
    sizes = [int(n) for n in parser.parse_args().sizes.split(",")]
    previous = None
    for n in sizes:
        html = '<div class="paywall-jump">' * n + "<p>The rest of the post.</p>"
        start = time.perf_counter()
        convert_post_body(html=html)
        took = time.perf_counter() - start
        ratio = f"  x{took / previous:.1f}" if previous else ""
        print(f"{n:>6} unclosed paywall-jump divs: {took:7.3f} s{ratio}")
        previous = took


if __name__ == "__main__":
    main()
