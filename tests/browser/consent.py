"""Drives the consent page in headless Chromium (Debian's, through Playwright), as a person would.

Usage: consent.py CONSENT_URL USERNAME PASSWORD ACTION SCREENSHOT_PREFIX
ACTION is approve, deny or look (sign in and read the page only). Prints one JSON object: the
page's visible text after signing in, what the outcome paragraph said after the action, and
whether the approve button was there. Screenshots of the signed-in page are written at a phone
width (390 x 844) and a desktop width (1280 x 800).
"""

import json
import os
import sys

from playwright.sync_api import sync_playwright


def main() -> None:
    url, username, password, action, prefix = sys.argv[1:6]
    chromium = os.environ.get("AP2_CHROMIUM", "/usr/bin/chromium")
    result = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
        page = context.new_page()
        page.goto(url)
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("#signin")
        page.wait_for_load_state()
        result["text"] = page.inner_text("body")
        result["title"] = page.title()
        result["can_approve"] = page.locator("#approve").count() == 1
        page.screenshot(path=f"{prefix}-phone.png", full_page=True)
        page.set_viewport_size({"width": 1280, "height": 800})
        page.screenshot(path=f"{prefix}-desktop.png", full_page=True)
        if action in ("approve", "deny") and result["can_approve"]:
            page.click(f"#{action}")
            page.wait_for_load_state()
            result["outcome"] = page.inner_text("#outcome")
        browser.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
