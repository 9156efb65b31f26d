// Loads a browser SDK, unmodified from its npm package, in a page served from a second loopback
// origin, drives it in headless Chromium against a Cohort server, then leaves the page.
//
//   node run.mjs <scenario> <cohort base URL> <write key> <user id>
//
// Scenarios: segment (analytics-next, settings fetched from Cohort through cdnURL), segment-batching
// (the same with its batching delivery, which posts to /v1/b), rudderstack
// (the bundled v3 build, source configuration through configUrl, events over XHR) and
// rudderstack-beacon (the same, events through navigator.sendBeacon).
//
// Prints one JSON object: the anonymous ID the SDK used, the page's origin, every request to
// Cohort with its status, failed requests and console errors.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const [scenario, cohort, writeKey, userId] = process.argv.slice(2);
if (!scenario || !cohort || !writeKey || !userId) {
  console.error('usage: node run.mjs <segment|segment-batching|rudderstack|rudderstack-beacon> <cohort URL> <write key> <user id>');
  process.exit(2);
}

const sdkFiles = {
  '/sdk/segment.js': 'node_modules/@segment/analytics-next/dist/umd/index.js',
  '/sdk/rudderstack.mjs': 'node_modules/@rudderstack/analytics-js/dist/npm/modern/bundled/esm/index.mjs',
};

// The same five calls for every SDK; `sdk` adapts the names. The last track is sent as the page
// is left, so it rides the SDK's page-hide delivery (keepalive fetch or beacon).
const story = `
  const userId = ${JSON.stringify(userId)};
  const anonymousId = await sdk.anonymousId();
  await sdk.page('Shop', 'Home', { path: '/' });
  // A visitor signs up: the browser's anonymous ID becomes the new user.
  await sdk.alias(userId, anonymousId);
  await sdk.identify(userId, { email: userId + '@example.com', plan: 'pro' });
  await sdk.track('Product Viewed', { product_id: 'p-1', price: 12.5 });
  await sdk.group('org-' + userId, { name: 'Acme' });
  window.storyDone = { anonymousId };
`;

const pages = {
  segment: (batching) => `<!doctype html><html><head><title>shop</title><link rel="icon" href="data:,"></head><body>
<script src="/sdk/segment.js"></script>
<script>
  (async () => {
    const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(
      { writeKey: ${JSON.stringify(writeKey)}, cdnURL: ${JSON.stringify(cohort)} },
      ${batching}
        ? { integrations: { 'Segment.io': { deliveryStrategy:
            { strategy: 'batching', config: { size: 3, timeout: 300 } } } } }
        : {});
    const sdk = {
      page: (c, n, p) => analytics.page(c, n, p),
      identify: (u, t) => analytics.identify(u, t),
      track: (e, p) => analytics.track(e, p),
      group: (g, t) => analytics.group(g, t),
      alias: (to, from) => analytics.alias(to, from),
      anonymousId: () => analytics.user().anonymousId(),
      leave: (e) => { analytics.track(e); },
    };
    window.sdk = sdk;
    ${story}
  })().catch((e) => { console.error('story failed: ' + e); });
</script></body></html>`,
  rudderstack: (beacon) => `<!doctype html><html><head><title>shop</title><link rel="icon" href="data:,"></head><body>
<script type="module">
  import { RudderAnalytics } from '/sdk/rudderstack.mjs';
  const rudder = new RudderAnalytics();
  rudder.load(${JSON.stringify(writeKey)}, ${JSON.stringify(cohort)}, {
    configUrl: ${JSON.stringify(cohort)},
    useBeacon: ${beacon},
    logLevel: 'ERROR',
  });
  const call = (method, ...args) => new Promise((resolve) => rudder[method](...args, () => resolve()));
  rudder.ready(async () => {
    const sdk = {
      page: (c, n, p) => call('page', c, n, p),
      identify: (u, t) => call('identify', u, t),
      track: (e, p) => call('track', e, p),
      group: (g, t) => call('group', g, t),
      alias: (to, from) => call('alias', to, from),
      anonymousId: () => rudder.getAnonymousId(),
      leave: (e) => { rudder.track(e); },
    };
    window.sdk = sdk;
    try { ${story} } catch (e) { console.error('story failed: ' + e); }
  });
</script></body></html>`,
};

function pageFor(name) {
  if (name === 'segment') return pages.segment(false);
  if (name === 'segment-batching') return pages.segment(true);
  if (name === 'rudderstack') return pages.rudderstack(false);
  if (name === 'rudderstack-beacon') return pages.rudderstack(true);
  throw new Error(`unknown scenario ${name}`);
}

const site = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://site');
  if (url.pathname === '/') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(pageFor(scenario));
  } else if (url.pathname === '/next') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>next</title><link rel="icon" href="data:,"><p>left the shop</p>');
  } else if (sdkFiles[url.pathname]) {
    res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
    fs.createReadStream(path.join(here, sdkFiles[url.pathname])).pipe(res);
  } else {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
const origin = `http://127.0.0.1:${site.address().port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const result = { origin, consoleErrors: [], failedRequests: [], requests: [] };
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error') result.consoleErrors.push(msg.text());
  });
  page.on('pageerror', (err) => result.consoleErrors.push(String(err)));
  page.on('requestfailed', (req) => {
    result.failedRequests.push({ url: req.url(), error: req.failure()?.errorText });
  });
  page.on('response', (res) => {
    const req = res.request();
    if (req.url().startsWith(cohort)) {
      result.requests.push({ method: req.method(), url: req.url(), status: res.status() });
    }
  });
  await page.goto(origin + '/');
  await page.waitForFunction(() => window.storyDone !== undefined, null, { timeout: 30000 });
  Object.assign(result, await page.evaluate(() => window.storyDone));
  // The story's calls resolve when the SDK has queued an event, not when it has delivered it:
  // RudderStack's XHR queue may still be sending when the story ends (slowly on a loaded
  // machine). Let it drain, so that only the last event below races the page's end.
  await page.waitForLoadState('networkidle', { timeout: 20000 }).catch(() => {});
  // Leave while the last event is being sent: it must still arrive.
  await page.evaluate(() => { window.sdk.leave('Left Shop'); });
  await page.goto(origin + '/next');
  // Beacons and keepalive requests outlive the page; give them a moment to be answered.
  await page.waitForTimeout(1500);
  await context.close();
} finally {
  await browser.close();
  site.close();
}
console.log(JSON.stringify(result));
