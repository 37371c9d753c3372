// Drives the demo page in headless Chromium: connect, receive messages published from the page's
// form and from the backend, join a channel by command, and save a screenshot.
//   node demo.mjs PAGE_URL ADMIN_URL SCREENSHOT_PATH
// PAGE_URL is the client listener (where `throng` serves the page by default), ADMIN_URL the
// admin API the backend publishes through.
// Chromium comes from Debian (`apt-get install chromium`); playwright-core downloads no browser.
import { chromium } from "playwright-core";

const [pageUrl, adminUrl, screenshot] = process.argv.slice(2);
if (!pageUrl || !adminUrl || !screenshot) {
  console.error("usage: node demo.mjs PAGE_URL ADMIN_URL SCREENSHOT_PATH");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
let passed = 0;
let failed = 0;

async function check(name, body) {
  try {
    await body();
    passed += 1;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}: ${e.message.split("\n")[0]}`);
  }
}

async function publish(channel, data) {
  const response = await fetch(`${adminUrl}/v1/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  if (!response.ok) throw new Error(`publish answered ${response.status}`);
  return response.json();
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // Root in a container has no user namespaces for the sandbox.
  // The machine has no network: keep Chromium from trying to reach its services.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // Over TLS, browser-test.sh passes the hash of its test certificate's key: Chromium then
    // accepts exactly that certificate (the flag needs its own profile, which playwright makes).
    ...(process.env.TRUST_SPKI ? [`--ignore-certificate-errors-spki-list=${process.env.TRUST_SPKI}`] : []),
  ],
});
const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
page.setDefaultTimeout(10_000);
const consoleErrors = [];
page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));

try {
  await check("the page loads", async () => {
    const response = await page.goto(`${pageUrl}/`);
    if (response.status() !== 200) throw new Error(`status ${response.status()}`);
    await page.waitForSelector("text=throng");
  });

  await check("connect with ?channels=news", async () => {
    // The page chose the scheme: wss: when it was loaded over https:.
    const url = await page.inputValue("#url");
    const want = pageUrl.startsWith("https:") ? "wss://" : "ws://";
    if (!url.startsWith(want)) throw new Error(`socket URL ${url}, want ${want}...`);
    await page.fill("#channels", "news");
    await page.click("#connect");
    await page.waitForSelector("#status.open");
    // The welcome line means the subscriptions are live.
    await page.waitForSelector("#messages li.system >> text=welcome");
  });

  await check("publish from the page's form arrives on the page", async () => {
    await page.fill("#pub-channel", "news");
    await page.fill("#pub-data", "hello from chromium");
    await page.click("#publish");
    await page.waitForSelector("#pub-result >> text=queued to 1 connection(s)");
    const line = page.locator("#messages li.msg", { hasText: "hello from chromium" });
    await line.waitFor();
    const latency = await line.locator(".latency").textContent();
    if (!/^\d+ ms$/.test(latency)) throw new Error(`latency cell ${JSON.stringify(latency)}`);
  });

  await check("a backend publish arrives on the page", async () => {
    const reply = await publish("news", { from: "backend", n: 1 });
    if (reply.queued !== 1) throw new Error(`queued ${reply.queued}`);
    await page.locator("#messages li.msg", { hasText: '"from":"backend"' }).waitFor();
  });

  await check("subscribe by command, then receive on that channel", async () => {
    await page.fill("#channel", "chat");
    await page.click("#subscribe");
    await page.waitForSelector("#messages li.system >> text=subscribed chat");
    await publish("chat", "on the chat channel");
    await page.locator("#messages li.msg", { hasText: "on the chat channel" }).waitFor();
  });

  await check("no console errors", async () => {
    if (consoleErrors.length) throw new Error(consoleErrors.join("; "));
  });
} finally {
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot: ${screenshot}`);
  await browser.close();
}

console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
