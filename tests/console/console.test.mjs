// Browser tests of the operator console, in a real headless Chromium
// (Debian's, driven by playwright-core). One broker with the order saga
// running (examples/order-saga: config, rules and services); each test
// reads the console and checks it against the Admin API or /metrics.
// Screenshots go to tests/console/output/ (or $CONSOLE_TEST_OUTPUT).
//
//   scripts/console-test.sh        # builds, installs what is missing, runs this

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { chromium } from 'playwright-core';

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = path.join(process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache/switchyard-target'), 'debug');
const output = process.env.CONSOLE_TEST_OUTPUT || path.join(root, 'tests/console/output');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const ORDERS = 12; // order N takes path N % 6: two of them are poison (dead-lettered)

const children = [];
let work; let grpcUrl; let httpUrl; let browser; let page;

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

function start(program, args, logName) {
  const log = fs.openSync(path.join(work, logName), 'w');
  const child = spawn(path.join(bin, program), args, {
    cwd: root, env: { ...process.env, SWITCHYARD_URL: grpcUrl }, stdio: ['ignore', log, log],
  });
  children.push(child);
  return child;
}

/// Polls `check` (async, truthy when done) every 200 ms for up to `seconds`.
async function eventually(what, check, seconds = 30) {
  const deadline = Date.now() + seconds * 1000;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) assert.fail(`${what}: not within ${seconds} s (last: ${last})`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function admin(method, body) {
  const response = await fetch(`${httpUrl}/api/v1/admin/${method}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body || {}),
  });
  const reply = await response.json();
  assert.equal(response.status, 200, `${method}: ${JSON.stringify(reply)}`);
  return reply;
}

async function metric(key) {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${key} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

async function cli(...args) {
  const { stdout } = await run(path.join(bin, 'switchyard'), [...args, '--url', grpcUrl], { cwd: root });
  return stdout;
}

async function show(hash) {
  await page.goto(`${httpUrl}/ui/${hash}`);
  await page.waitForSelector('main[data-loaded]');
}

/// Waits for the redrive progress line to say `text`.
async function redriveStatus(text) {
  await page.waitForFunction((want) => document.querySelector('[data-testid=redrive-status]')?.textContent === want, text, { timeout: 30000 });
}

async function screenshot(name) {
  const file = path.join(output, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
}

before(async () => {
  fs.mkdirSync(output, { recursive: true });
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-console-'));
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  grpcUrl = `http://127.0.0.1:${grpcPort}`;
  httpUrl = `http://127.0.0.1:${httpPort}`;
  const broker = start('switchyard', ['serve', '--config', 'examples/order-saga/switchyard.yaml',
    '--listen', `127.0.0.1:${grpcPort}`, '--metrics-listen', `127.0.0.1:${httpPort}`,
    '--data-dir', path.join(work, 'data')], 'broker.log');
  broker.on('exit', (code) => {
    if (code !== null && code !== 0) console.log(fs.readFileSync(path.join(work, 'broker.log'), 'utf8'));
  });
  await eventually('the broker answers', () => cli('topics', 'list'));
  for (const service of ['inventory', 'payment', 'shipping']) start('order_saga', [service], `${service}.log`);
  // Places the orders and waits until every saga that can end has ended.
  await run(path.join(bin, 'order_saga'), ['orders', '--count', String(ORDERS)], {
    cwd: root, env: { ...process.env, SWITCHYARD_URL: grpcUrl },
  });
  await eventually('both poison orders are dead-lettered', async () => {
    const listed = await admin('ListDeadLetters', { subscription: 'payment-service' });
    return listed.dead_letters.length === ORDERS / 6;
  });
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('pageerror', (error) => console.log(`page error: ${error.message}`));
});

after(async () => {
  await browser?.close();
  const exited = children.map((child) => new Promise((resolve) => {
    if (child.exitCode !== null) resolve();
    else child.on('exit', resolve);
  }));
  for (const child of children) child.kill('SIGTERM');
  await Promise.all(exited);
  // Logs and data stay for a look with KEEP_CONSOLE_TEST_DIR=1.
  if (process.env.KEEP_CONSOLE_TEST_DIR) console.log(`broker and service logs: ${work}`);
  else fs.rmSync(work, { recursive: true, force: true });
});

test('the overview shows every subscription with the lag the Admin API reports', async () => {
  await show('#/overview');
  const subscriptions = (await admin('ListSubscriptions')).subscriptions;
  assert.equal(await page.locator('tr[data-subscription]').count(), subscriptions.length);
  for (const { name } of subscriptions) {
    // Lag moves while the saga settles: poll until page and API agree.
    await eventually(`lag of ${name}`, async () => {
      const shown = await page.locator(`tr[data-subscription="${name}"] [data-field="lag-events"]`).textContent();
      const described = await admin('DescribeSubscription', { name });
      return Number(shown.replace(/,/g, '')) === Number(described.total_lag);
    });
  }
  const payments = page.locator('tr[data-subscription="payment-service"]');
  await eventually('the dead letters of payment-service', async () => (await payments.locator('[data-field="dead-letters"]').textContent()) === String(ORDERS / 6));
  await eventually('lag in seconds agrees with the metric', async () => {
    const shown = Number((await payments.locator('[data-field="lag-seconds"]').textContent()).replace(' s', ''));
    const measured = await metric('switchyard_subscription_lag_seconds{subscription="payment-service"}');
    return Math.abs(shown - measured) < 3;
  });
  const retained = await page.locator('tr[data-topic="orders"] [data-field="retained"]').textContent();
  assert.equal(Number(retained), (await admin('ListTopics')).topics.find((t) => t.name === 'orders').retained_events);
  // Rates appear from the second sampling on.
  await page.waitForFunction(() => [...document.querySelectorAll('td')].some((td) => td.textContent.endsWith('/s')));
  await screenshot('overview');
});

test('the choreography map draws every rule, topic and subscription, with live rates', async () => {
  await show('#/map');
  const [rules, subscriptions] = [(await admin('ListRules')).rules, (await admin('ListSubscriptions')).subscriptions];
  const expected = new Set();
  for (const rule of rules.filter((r) => r.enabled)) {
    for (const topic of rule.targets) expected.add(`rule:${rule.name}->topic:${topic}`);
    for (const type of JSON.parse(rule.pattern_json).type || []) expected.add(`type:${type}->rule:${rule.name}`);
  }
  for (const sub of subscriptions) {
    expected.add(`topic:${sub.topic}->subscription:${sub.name}`);
    if (sub.dead_letter_topic) expected.add(`subscription:${sub.name}->dlq:${sub.dead_letter_topic}`);
  }
  const drawn = new Set(await page.locator('[data-edge]').evaluateAll((els) => els.map((e) => e.dataset.edge)));
  for (const edge of expected) assert.ok(drawn.has(edge), `edge ${edge} is drawn`);
  for (const rule of rules) assert.equal(await page.locator(`[data-node="rule:${rule.name}"]`).count(), 1, rule.name);
  for (const sub of subscriptions) assert.equal(await page.locator(`[data-node="subscription:${sub.name}"]`).count(), 1, sub.name);
  // Traffic that only the audit rule routes: its edge shows a live rate.
  const edge = page.locator('[data-edge="rule:saga-audit->topic:audit"]');
  // The rule matches any type: its type edge carries the same rate.
  const typeEdge = page.locator('[data-edge="type:any type on default->rule:saga-audit"]');
  let n = 0;
  await eventually('a live rate on saga-audit → audit', async () => {
    const events = Array.from({ length: 5 }, () => JSON.stringify({
      specversion: '1.0', id: `heartbeat-${n += 1}`, source: '/examples/order-saga', type: 'com.example.console.heartbeat',
    })).join('\n');
    const publish = spawn(path.join(bin, 'switchyard'), ['publish', '--stdin', '--url', grpcUrl], { stdio: ['pipe', 'ignore', 'inherit'] });
    publish.stdin.end(`${events}\n`);
    await new Promise((resolve) => publish.on('exit', resolve));
    const [rate, typeRate] = [await edge.getAttribute('data-rate'), await typeEdge.getAttribute('data-rate')];
    return Number(rate) > 0 && rate === typeRate;
  });
  assert.match(await edge.locator('text').textContent(), /^[\d.]+\/s$/);

  await screenshot('map');
});

test('a flow found by correlation id shows every hop of the saga', async () => {
  await show('#/flow');
  await page.fill('#flow-query', 'order-1');
  await page.click('#flow-find');
  await page.waitForSelector('[data-testid=flow-summary]');
  const flow = await admin('GetFlow', { query: 'order-1', limit: 500 });
  const steps = flow.events.reduce((n, e) => n + e.steps.length, 0);
  assert.equal(await page.locator('tr[data-step]').count(), steps, 'one row per recorded step');
  // The happy path: placed → inventory → payment → shipping → order service.
  for (const subscription of ['inventory-service', 'payment-service', 'shipping-service', 'order-service']) {
    for (const step of ['delivered', 'acked']) {
      assert.ok(await page.locator(`tr[data-step="${step}"][data-subscription="${subscription}"]`).count() >= 1, `${step} by ${subscription}`);
    }
  }
  assert.equal(await page.locator('tr[data-step="published"]').count(), flow.events.length, 'every event was published once');
  // Within each event the +ms column never goes back.
  const elapsed = await page.evaluate(() => [...document.querySelectorAll('tr.event-head')].map((head) => {
    const values = [];
    for (let row = head.nextElementSibling; row && !row.classList.contains('event-head'); row = row.nextElementSibling) {
      values.push(Number(row.querySelector('[data-field=elapsed]').textContent));
    }
    return values;
  }));
  for (const values of elapsed) {
    assert.deepEqual(values, [...values].sort((a, b) => a - b), `+ms in order: ${values}`);
  }
  await screenshot('flow');

  // A traced event: the flow links out to Jaeger for its trace.
  const trace = '4bf92f3577b34da6a3ce929d0e0e4736';
  await cli('publish', '--type', 'com.example.console.probe', '--source', '/console-test',
    '--ext', `traceparent=00-${trace}-00f067aa0ba902b7-01`, '--data', '{}');
  await eventually('the probe is recorded', async () => (await admin('GetFlow', { query: trace })).events.length === 1);
  await show(`#/flow/${trace}`);
  const link = page.locator('[data-testid=jaeger-link]');
  assert.equal(await link.getAttribute('href'), `http://localhost:16686/trace/${trace}`);
});

test('a flow that does not exist says so, once, instead of failing', async () => {
  let calls = 0;
  const count = () => { calls += 1; };
  page.on('request', (request) => { if (request.url().endsWith('/GetFlow')) count(); });
  await show('#/flow/no-such-order');
  const none = page.locator('[data-testid=flow-none]');
  assert.match(await none.textContent(), /No flow found for “no-such-order”/);
  assert.ok(await page.locator('#banner').isHidden(), 'no error banner');
  await new Promise((resolve) => setTimeout(resolve, 2500));
  assert.equal(calls, 1, 'asked once, not polled');
  page.removeListener('request', count);
});

test('a slow answer for a view the user left is not painted over the next view', async () => {
  // Hold the dead-letter view's first call back until the user moved on.
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  let asked;
  const requested = new Promise((resolve) => { asked = resolve; });
  await page.route('**/api/v1/admin/ListSubscriptions', async (route) => {
    asked();
    await held;
    await route.continue();
  });
  try {
    await page.goto(`${httpUrl}/ui/#/dlq/payment-service`);
    await requested;
    await page.evaluate(() => { location.hash = '#/flow'; });
    await page.waitForSelector('#flow-query');
    const answered = page.waitForResponse('**/api/v1/admin/ListSubscriptions');
    release();
    await answered;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal(await page.locator('#view[data-view=flow] #flow-query').count(), 1, 'still the flow view');
    assert.equal(await page.locator('#view #dlq-subscription, #view #dlq-list').count(), 0, 'nothing of the dead-letter view');
  } finally {
    release();
    await page.unroute('**/api/v1/admin/ListSubscriptions');
  }
});

test('dead letters are redriven from the browser, with confirmation and progress, and delivered again', async () => {
  await show('#/dlq/payment-service');
  const waiting = page.locator('tr[data-state="waiting"]');
  assert.equal(await waiting.count(), ORDERS / 6);
  const first = await waiting.first().getAttribute('data-dead-letter');
  await waiting.first().locator('input[type=checkbox]').check();
  await screenshot('dead-letters');
  await page.click('#redrive-selected');
  await page.waitForSelector('#confirm[open]');
  assert.match(await page.locator('#confirm-text').textContent(), /1 selected dead letter/);
  await page.click('#confirm-ok');
  await redriveStatus('done: redriven 1');
  assert.equal(await page.locator(`tr[data-dead-letter="${first}"][data-state="redriven"]`).count(), 1);
  // Delivered to payment-service again, from its private redrive topic —
  // and, still poison, dead-lettered again after its attempts.
  await eventually('the redriven event is delivered and dead-lettered again', async () => {
    const flow = await admin('GetFlow', { query: first });
    const steps = flow.events[0].steps;
    const redriven = steps.find((s) => s.step === 'redriven');
    const after = (kind) => steps.some((s) => s.step === kind && s.subscription === 'payment-service'
      && Number(s.at_unix_ms) >= Number(redriven.at_unix_ms) && (kind !== 'delivered' || s.position.topic === 'payment-service.redrive'));
    return redriven && after('delivered') && after('dead_lettered');
  });
  await eventually('the new dead letter is listed', async () => {
    await page.click('#dlq-apply');
    await page.waitForTimeout(300);
    return (await page.locator('tr[data-state="waiting"]').count()) === ORDERS / 6;
  });
  // Cancelling the confirmation changes nothing.
  await page.click('#redrive-all');
  await page.click('#confirm-cancel');
  assert.equal((await admin('DescribeSubscription', { name: 'payment-service' })).dead_letters, ORDERS / 6);
  // Redrive all that match a filter, in batches with progress.
  await page.fill('#dlq-filter', '{"type": ["com.example.stock.reserved"]}');
  await page.click('#dlq-apply');
  await page.click('#redrive-all');
  await page.click('#confirm-ok');
  await redriveStatus(`done: redriven ${ORDERS / 6}`);
  const audit = fs.readFileSync(path.join(work, 'data', 'audit.log'), 'utf8');
  assert.match(audit, /"operation":"RedriveDeadLetters"/, 'the redrive is audit-logged');
});

test('a pattern is tested against recorded events before it is deployed', async () => {
  await show('#/rules');
  assert.equal(await page.locator('tr[data-rule]').count(), (await admin('ListRules')).rules.length);
  await page.fill('#test-pattern', '{"type": ["com.example.order.placed"]}');
  await page.selectOption('#test-target', 'payments');
  await page.fill('#test-last', '1000');
  await page.click('#test-run');
  await page.waitForSelector('[data-testid=test-summary]');
  const placed = await metric('switchyard_events_routed_total{bus="default",rule="order-placed"}');
  const summary = await page.locator('[data-testid=test-summary]').textContent();
  assert.match(summary, new RegExp(`^Matches ${placed} of the \\d+ newest`), summary);
  assert.equal(await page.locator('tr[data-matched]').count(), Math.min(placed, 50));
  assert.match(await page.locator('[data-testid=test-subscriptions]').textContent(), /payment-service \(\+\d+\)/);
  await screenshot('rules');
  await page.fill('#test-pattern', '{"type": [{"numeric": [">"]}]}');
  await page.click('#test-run');
  await page.waitForSelector('[data-testid=test-error]');
});

test('a subscription is moved and deleted from the browser, each only after confirmation', async () => {
  // Over the dead-letter topic, once the redriven poison events (test
  // above) are settled — dead-lettered again: then nothing new arrives.
  await eventually('the redriven events are settled', async () => {
    const payments = await admin('DescribeSubscription', { name: 'payment-service' });
    return payments.partitions.filter((p) => p.topic === 'payment-service.redrive').every((p) => Number(p.lag) === 0);
  });
  await admin('CreateSubscription', { subscription: { name: 'scratch', topic: 'payment-service.dlq' } });
  const lag = async () => Number((await admin('DescribeSubscription', { name: 'scratch' })).total_lag);
  const before = await lag();
  assert.ok(before > 0, 'a new subscription starts at the oldest event');
  await show('#/subscription/scratch');
  assert.equal(await page.locator('[data-field="lag"]').first().textContent(), String(before));
  await page.selectOption('#seek-target', 'latest');
  await page.click('#seek');
  await page.click('#confirm-cancel');
  assert.equal(await lag(), before, 'cancelled: nothing moved');
  await page.click('#seek');
  await page.click('#confirm-ok');
  await page.waitForFunction(() => document.querySelector('[data-testid=action-status]')?.textContent === 'done: moved');
  assert.equal(await lag(), 0);
  assert.equal(await page.locator('[data-field="lag"]').first().textContent(), '0');
  await screenshot('subscription');

  await page.click('#delete-subscription');
  assert.ok(await page.locator('#confirm-ok').isDisabled(), 'deleting wants the name typed');
  await page.fill('#confirm-typed', 'scratch');
  await page.click('#confirm-ok');
  await page.waitForFunction(() => location.hash === '#/overview');
  const names = (await admin('ListSubscriptions')).subscriptions.map((x) => x.name);
  assert.ok(!names.includes('scratch'), names.join(', '));
  const audit = fs.readFileSync(path.join(work, 'data', 'audit.log'), 'utf8');
  assert.match(audit, /"operation":"SeekSubscription","action":"seek".*"detail":"seek to the end"/);
  assert.match(audit, /"operation":"DeleteSubscription"/);
});

test('with tokens configured, the console does what the token may and says what is missing', async () => {
  // A second broker, with authentication and ACLs.
  const sha = (token) => createHash('sha256').update(token).digest('hex');
  const dir = path.join(work, 'auth');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'config.yaml'), `
auth:
  tokens:
    - {principal: ops-viewer, sha256: ${sha('viewer-token')}}
    - {principal: order-service, sha256: ${sha('publisher-token')}}
    - {principal: ops-alice, sha256: ${sha('operator-token')}}
    - {principal: topic-watcher, sha256: ${sha('topics-token')}}
  acl:
    - principal: ops-alice
      allow: [manage:*, redrive:*, view:*]
    - principal: topic-watcher
      allow: [view:topics]
    - principal: ops-viewer
      allow: [view:*, subscribe:*]
    - principal: order-service
      allow: [publish:default]
topics:
  - {name: orders, partitions: 1}
subscriptions:
  - {name: billing, topic: orders}
`);
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  start('switchyard', ['serve', '--config', path.join(dir, 'config.yaml'), '--listen', `127.0.0.1:${grpcPort}`,
    '--metrics-listen', `127.0.0.1:${httpPort}`, '--data-dir', path.join(dir, 'data')], 'auth-broker.log');
  const url = `http://127.0.0.1:${httpPort}`;
  await eventually('the second broker serves the console', async () => (await fetch(`${url}/ui/`)).ok);
  const bannerText = () => page.locator('#banner').textContent();

  await page.goto(`${url}/ui/#/overview`);
  await page.evaluate(() => sessionStorage.clear());
  await page.reload();
  await eventually('asked for a token', async () => /bearer token/.test(await bannerText()));

  await page.fill('#token', 'publisher-token');
  await page.click('#token-form button');
  await eventually('told what is missing', async () => /Not allowed: principal "order-service" may not view/.test(await bannerText()));
  assert.equal(await page.locator('tr[data-subscription]').count(), 0, 'nothing shown without the grant');

  await page.fill('#token', 'viewer-token');
  await page.click('#token-form button');
  await page.waitForSelector('tr[data-subscription="billing"]');
  assert.ok(await page.locator('#banner').isHidden());

  // An operator (manage, redrive, view; no subscribe) sees every panel,
  // subscriptions and their dead letters included.
  const withToken = async (token) => {
    const before = await page.locator('#view').getAttribute('data-loaded');
    await page.fill('#token', token);
    await page.click('#token-form button');
    await page.waitForFunction((was) => {
      const now = document.querySelector('#view').dataset.loaded;
      return now && now !== was;
    }, before);
  };
  await withToken('operator-token');
  await page.waitForSelector('tr[data-subscription="billing"] [data-field=lag-events]');
  assert.equal(await page.locator('[data-testid=panel-hidden], tr[data-hidden]').count(), 0, 'nothing hidden');
  assert.match(await page.locator('tr[data-subscription="billing"] [data-field=consumers]').textContent(), /none connected/);

  // With only view:topics, the topics panel shows; the others say which
  // grant they need instead of loading forever.
  await withToken('topics-token');
  await page.waitForSelector('section[data-panel=subscriptions] [data-testid=panel-hidden]');
  assert.equal(await page.locator('section[data-panel=topics] tr[data-topic="orders"]').count(), 1);
  assert.match(await page.locator('section[data-panel=subscriptions]').textContent(), /view:subscriptions/);
  assert.match(await page.locator('section[data-panel=rules]').textContent(), /view:rules/);
  await page.evaluate(() => sessionStorage.clear());
});
