"""The search page and the API docs in a real headless Chromium (Debian's chromium + chromium-driver) against
`tqsearch serve`, and the docs' assets coming from the server itself (no CDN: they must work offline)."""

import json
import re
import shutil
from urllib.parse import urlsplit

import httpx
import pytest

from tqsearch.embed import load_embedder

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
KEY = "page-key"
ASSET_TYPES = {"js": "text/javascript", "css": "text/css", "png": "image/png"}


@pytest.fixture
def browser():
    if BROWSER is None or DRIVER is None:
        pytest.skip("needs chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    with webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER)) as driver:
        yield driver


def _search(browser, text: str, where: str = "") -> list[dict]:
    """Type a query (and a where filter) into the page, submit, and read the hits it shows."""
    browser.find_element(By.ID, "where").clear()
    browser.find_element(By.ID, "where").send_keys(where)
    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text, Keys.ENTER)
    WebDriverWait(browser, 60).until(lambda b: "hits in" in b.find_element(By.ID, "status").text)
    return [{"id": li.get_attribute("data-id"), "score": float(li.find_element(By.CLASS_NAME, "score").text),
             "doc": li.find_element(By.CLASS_NAME, "doc").text,
             "meta": json.loads(li.find_element(By.CLASS_NAME, "meta").text)}
            for li in browser.find_elements(By.CSS_SELECTOR, "li.hit")]


def test_typed_query_shows_the_servers_hits(start_server, tmp_path, browser):
    embed = load_embedder()
    if embed is None:
        pytest.skip("needs the embed extra")
    server = start_server(str(tmp_path), "--demo", "--api-key", KEY)
    browser.get(f"{server.url}/")
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "keyrow").is_displayed())  # 401 asks for it
    browser.find_element(By.ID, "key").send_keys(KEY)
    hits = _search(browser, "a musical instrument")
    expected = httpx.post(f"{server.url}/collections/wordnet/query", headers={"X-API-Key": KEY},
                          json={"vectors": embed(["a musical instrument"]).tolist(), "k": 10}).json()["results"][0]
    assert [h["id"] for h in hits] == expected["ids"]
    assert [h["doc"] for h in hits] == expected["documents"]
    assert [h["score"] for h in hits] == [round(s, 3) for s in expected["scores"]]
    assert all("instrument" in h["doc"] for h in hits[:3])
    verbs = _search(browser, "to run quickly", where='{"pos": "verb"}')
    assert len(verbs) == 10 and all(h["meta"]["pos"] == "verb" for h in verbs)
    assert verbs[0]["meta"]["lemma"] == "sprint"
    browser.find_element(By.ID, "k").clear()
    browser.find_element(By.ID, "k").send_keys("3")
    assert len(_search(browser, "to run quickly")) == 3


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_from_the_server_without_the_key(start_server, tmp_path, page):
    server = start_server(str(tmp_path), "--api-key", KEY)
    html = httpx.get(f"{server.url}{page}")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    hosts = {urlsplit(url).netloc for url in re.findall(r"https?://[^\s\"'<>]+", html.text)}
    assert hosts <= {urlsplit(server.url).netloc}
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert {asset.rsplit(".", 1)[-1] for asset in assets} >= {"js", "png"}
    for asset in assets:
        r = httpx.get(f"{server.url}{asset}")
        assert r.status_code == 200 and len(r.content) > 1000
        assert r.headers["content-type"].startswith(ASSET_TYPES[asset.rsplit(".", 1)[-1]])
    assert httpx.get(f"{server.url}/openapi.json").json()["info"]["title"] == "tqsearch"
    assert httpx.get(f"{server.url}/collections").status_code == 401  # the key is on, for the API only


def test_swagger_ui_renders_the_routes(start_server, tmp_path, browser):
    server = start_server(str(tmp_path), "--api-key", KEY)
    browser.get(f"{server.url}/docs")
    query_route = (By.CSS_SELECTOR, '.opblock-summary-path[data-path="/collections/{name}/query"]')
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(*query_route))
    paths = {e.get_attribute("data-path") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/collections", "/collections/{name}", "/collections/{name}/points", "/health"} <= paths
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(f"{server.url}/") for url in loaded)
