"""A person at a browser (headless Chromium through Playwright): opens a URL, signs in, approves.

Usage: person.py URL   (the `BROWSER` command of tests/walkthrough.rs)
The person's name and password come from AP2_PERSON_USERNAME and AP2_PERSON_PASSWORD. Works for
the agent sign-in page (/oauth2/authorize) and the wallet's consent page: both have a sign-in
form (#signin) and an approve button (#approve). Prints the text of the last page.
"""

import os
import sys

from playwright.sync_api import sync_playwright


def main() -> None:
    url = sys.argv[-1]
    chromium = os.environ.get("AP2_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url)
        page.fill("input[name=username]", os.environ["AP2_PERSON_USERNAME"])
        page.fill("input[name=password]", os.environ["AP2_PERSON_PASSWORD"])
        page.click("#signin")
        page.wait_for_load_state()
        page.click("#approve")
        page.wait_for_load_state()
        print(page.inner_text("body"), file=sys.stderr)
        browser.close()


if __name__ == "__main__":
    main()
