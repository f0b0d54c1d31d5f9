// The chat page in headless Chromium, for the `the_page_chats_in_chromium` test of main.rs: two
// people join, talk, see each other in the room; the server restarts (the test does it when this
// prints `restart` and answers `restarted` on stdin); they talk on. Prints what each page shows as
// one JSON line. Usage: node browser_test.cjs URL (NODE_PATH must find playwright-core).
const { chromium } = require('playwright-core');
const readline = require('node:readline');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const WAIT = { timeout: 20000, polling: 20 };
const input = readline.createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();

(async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gotalk-chat-'));
  const context = await chromium.launchPersistentContext(dataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    timeout: 30000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const join = async (nick) => {
      const page = await context.newPage();
      page.on('pageerror', (e) => console.error(`[${nick} page error] ${e.message}`));
      await page.goto(process.argv[2], { timeout: 15000 });
      await page.fill('input[name=nick]', nick);
      await page.click('#join button');
      await page.waitForSelector('#say:not([hidden])', WAIT);
      return page;
    };
    const say = async (page, text) => {
      await page.fill('input[name=text]', text);
      await page.press('input[name=text]', 'Enter');
    };
    const shows = (page, sel, text) => page.waitForFunction(
      ([sel, text]) => document.querySelector(sel).innerText.includes(text), [sel, text], WAIT);
    const ann = await join('Ann');
    await say(ann, '  hello, anyone?  ');
    const bob = await join('Bob');
    await shows(bob, '#log', 'hello, anyone?'); // from the history
    await shows(ann, '#members', 'Bob');
    await say(bob, 'hi Ann');
    await say(bob, '   ');
    await shows(ann, '#log', 'hi Ann');
    await shows(bob, '#log', 'not sent: denied: empty message');

    console.log('restart');
    await lines.next();
    for (const page of [ann, bob]) await shows(page, '#log', 'some messages were missed');
    for (const page of [ann, bob]) await shows(page, '#status', 'connected as');
    await say(ann, 'still there?');
    await shows(bob, '#log', 'still there?');
    await bob.close();
    await shows(ann, '#log', 'Bob left');

    const view = (page) => page.evaluate(() => ({
      log: [...document.querySelectorAll('#log li')].map((li) =>
        [...li.childNodes].filter((n) => n.nodeName !== 'TIME').map((n) => n.textContent).join(' ')),
      members: [...document.querySelectorAll('#members li')].map((li) => li.textContent),
    }));
    console.log(JSON.stringify({ ann: await view(ann) }));
  } finally {
    input.close(); // else stdin keeps node running
    await context.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
