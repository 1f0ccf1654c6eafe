"""The chat page served at `/`, in a real headless browser (Debian's chromium driven by Playwright): a typed
message streams back the same answer `model.chat` gives, history carries into the next round, and fill mode fills
a blank. `.ci/run` installs chromium; locally the test skips without it, in CI it fails."""

import os
import shutil

import pytest

from tests.helpers.servers import chat_reference

CHROMIUM = os.environ.get("GLM_HF_CHROMIUM") or shutil.which("chromium")


@pytest.fixture(scope="module")
def page(chat_server):
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run must install Debian's chromium package.")
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(chat_server.url + "/")
        page.fill("#api-key", chat_server.API_KEY)
        yield page
        browser.close()


def send(page, text: str) -> str:
    answers = page.locator(".message.assistant")
    before = answers.count()
    page.fill("#input", text)
    page.click("#send")
    page.wait_for_selector(f".message.assistant:nth-of-type({2 * before + 2})[data-done='true']", timeout=60_000)
    return answers.nth(before).inner_text()


def test_the_page_streams_chat_answers_with_history(page, chatglm, tmp_path):
    first = send(page, "你好")
    assert first == chat_reference(chatglm, "你好", new_tokens=64)
    second = send(page, "hello")
    assert second == chat_reference(chatglm, "hello", history=[("你好", first)], new_tokens=64)
    assert page.locator(".message.user").all_inner_texts() == ["你好", "hello"]
    page.screenshot(path=str(tmp_path / "chat.png"))
    assert (tmp_path / "chat.png").stat().st_size > 0


def test_the_page_fills_blanks(page, tmp_path):
    page.click("#clear")
    page.select_option("#mode", "fill")
    answer = send(page, "hello [MASK] are you")
    assert answer.startswith("hello") and "fills:" in answer
    page.screenshot(path=str(tmp_path / "fill.png"))
