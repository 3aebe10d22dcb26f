// End-to-end test of the security officer console in a real browser (Debian's chromium, driven by
// playwright-core) against `tollbu demo` with real traffic: log in, filter by subject, open a
// record with its inclusion proof, verify the log; then change one byte of a record on disk and
// see verification fail at that record. A screenshot of each page goes to ./screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const bin = process.env.TOLLBU_BIN ?? path.join(repo, 'target/debug/tollbu');
const shots = path.join(here, 'screenshots');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

let demo;
let stateDir;
let browser;
let profileDir;
let page;
const env = {};

/** Starts the demo and reads what it prints until the guide is complete. */
async function startDemo() {
  stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollbu-console-'));
  demo = spawn(bin, ['demo', '--any-ports', '--state-dir', stateDir, '--exit-after', '600'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  demo.stderr.on('data', (d) => { err += d; });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo did not start:\n${out}\n${err}`)), 120_000);
    demo.stdout.on('data', (d) => {
      out += d;
      if (/curl -s http:\/\/[^\s]+\/audit\/checkpoint/.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    demo.on('exit', (code) => reject(new Error(`demo exited (${code}):\n${out}\n${err}`)));
  });
  const console_ = out.match(/console\s+(http:\/\/\S+\/console)\s+\(user (\S+), password (\S+)\)/);
  assert.ok(console_, `no console line in:\n${out}`);
  [, env.console, env.user, env.password] = console_;
  env.admin = new URL(env.console).origin;
  const token = out.match(/^TOKEN=\$\((.+)\)$/m);
  assert.ok(token, 'no token command');
  env.tokenCommand = token[1].split(' ');
  const allowed = out.match(/-H 'Tollbu-Purpose: benefit-assessment' (http:\/\/\S+)\/population\/persons\/(\d{11})/);
  assert.ok(allowed, 'no allowed-read command');
  [, env.gateway, env.pid] = allowed;
  const other = out.match(/consent_wrong_subject\):\ncurl .* (http:\/\/\S+)\/population\/persons\/(\d{11})/);
  env.otherPid = other ? other[2] : null;
}

async function traffic() {
  const [exe, ...args] = env.tokenCommand;
  const token = execFileSync(exe, args, { encoding: 'utf8' }).trim();
  const call = (pid, purpose) => fetch(`${env.gateway}/population/persons/${pid}`, {
    headers: { authorization: `Bearer ${token}`, ...(purpose ? { 'tollbu-purpose': purpose } : {}) },
  });
  const statuses = [];
  for (let i = 0; i < 3; i++) statuses.push((await call(env.pid, 'benefit-assessment')).status);
  statuses.push((await call(env.pid, null)).status); // denied: no purpose
  if (env.otherPid) statuses.push((await call(env.otherPid, 'benefit-assessment')).status);
  assert.deepEqual(statuses.slice(0, 4), [200, 200, 200, 403]);
  // Wait until a signed checkpoint covers the traffic (so records have inclusion proofs).
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ready = await (await fetch(`${env.admin}/readyz`)).json();
    if (ready.audit.checkpoint_size >= statuses.length) return statuses.length;
    assert.ok(Date.now() < deadline, `no checkpoint covers the traffic: ${JSON.stringify(ready.audit)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function shot(name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

before(async () => {
  fs.mkdirSync(shots, { recursive: true });
  await startDemo();
  env.records = await traffic();
  // A fresh profile directory per run (playwright passes it as --user-data-dir), removed after.
  profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollbu-chromium-'));
  browser = await chromium.launchPersistentContext(profileDir, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  page = browser.pages()[0] ?? (await browser.newPage());
});

after(async () => {
  await browser?.close();
  if (demo && demo.exitCode === null) {
    demo.kill('SIGTERM');
    await new Promise((r) => demo.once('exit', r));
  }
  // The demo's state (its audit log reserves a whole segment) would otherwise stay in the
  // machine's temporary directory after every run; TOLLBU_KEEP_STATE=1 keeps it for a look.
  if (stateDir && !process.env.TOLLBU_KEEP_STATE) fs.rmSync(stateDir, { recursive: true, force: true });
  if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
});

test('the console is refused without a session, and absent from the gateway port', async () => {
  const api = await fetch(`${env.admin}/console/api/records`, { redirect: 'manual' });
  assert.equal(api.status, 401);
  const html = await fetch(`${env.admin}/console/records`, { redirect: 'manual' });
  assert.equal(html.status, 303);
  assert.equal(html.headers.get('location'), '/console/login');
  const gateway = await fetch(`${env.gateway}/console/records`, { redirect: 'manual' });
  assert.notEqual(gateway.status, 200);
  assert.ok(!(await gateway.text()).includes('Tollbu console'));
  const wrong = await fetch(`${env.admin}/console/login`, {
    method: 'POST',
    body: new URLSearchParams({ user: env.user, password: 'not-the-password' }),
    redirect: 'manual',
  });
  assert.equal(wrong.status, 401);
  assert.equal(wrong.headers.get('set-cookie'), null);
});

test('log in, filter by subject, open a record, verify, tamper, verify again', async () => {
  await page.goto(env.console);
  assert.match(page.url(), /\/console\/login$/);
  await shot('01-login');
  await page.fill('input[name=user]', env.user);
  await page.fill('input[name=password]', env.password);
  await Promise.all([page.waitForURL(/\/console\/records/), page.click('button[type=submit]')]);
  const cookies = await browser.cookies();
  const session = cookies.find((c) => c.name === 'tollbu_console');
  assert.ok(session?.httpOnly, 'session cookie is HttpOnly');
  assert.equal(session.sameSite, 'Strict');
  assert.ok((await page.locator('table.records tbody tr').count()) >= env.records);
  await shot('02-recent-accesses');

  // Filter by subject: the national id is typed, hashed on the server, and never in the URL.
  await page.fill('input[name=subject_id]', env.pid);
  await Promise.all([page.waitForURL(/subject=[0-9a-f]{64}/), page.click('form.filters button[type=submit]')]);
  assert.ok(!page.url().includes(env.pid), 'the clear id stays out of the URL');
  const rows = page.locator('table.records tbody tr').filter({ hasText: 'population' });
  assert.equal(await rows.count(), 4, 'three allowed reads and one denial of this person');
  assert.match(await rows.nth(0).innerText(), /deny/);
  // The officer's own query about this person is itself on the person's record.
  const own = page.locator('table.records tbody tr').filter({ hasText: 'console:officer' });
  assert.match(await own.first().innerText(), /query/);
  assert.match(await page.locator('.notice.info').first().innerText(), /Subject filter/);
  await shot('03-filtered-by-subject');

  // Open the newest allowed record: full fields, inclusion proof, checkpoint.
  const allowedRow = rows.filter({ hasText: 'allow' }).first();
  const seq = (await allowedRow.locator('td').first().innerText()).trim();
  await Promise.all([page.waitForURL(new RegExp(`/console/records/${seq}$`)), allowedRow.locator('a').first().click()]);
  assert.equal(await page.locator('h1').innerText(), `Record ${seq}`);
  assert.match(await page.locator('.notice.ok').innerText(), /proof verifies/);
  assert.match(await page.locator('main').innerText(), /benefit-assessment/);
  await shot('04-record');

  await page.goto(`${env.admin}/console/verify`);
  assert.match(await page.locator('.notice').first().innerText(), /Verification succeeded/);
  assert.match(await page.locator('pre').last().innerText(), /^tollbu\.example\/demo\/gateway-0\n\d+\n/);
  await shot('05-verify-ok');

  // The citizen view, who-can and charts render.
  await page.goto(`${env.admin}/console/citizen`);
  await page.fill('input[name=subject_id]', env.pid);
  await Promise.all([page.waitForURL(/\/console\/citizen\?subject=/), page.click('main form button[type=submit]')]);
  assert.ok((await page.locator('table.citizen tbody tr').count()) >= 4);
  assert.match(await page.locator('table.citizen').innerText(), /0192:310000019/);
  await shot('06-citizen-view');
  await page.goto(`${env.admin}/console/who-can?service=population`);
  assert.ok((await page.locator('table.who-can tbody tr').count()) > 0);
  await shot('07-who-can');
  await page.goto(`${env.admin}/console/charts?hours=1`);
  assert.equal(await page.locator('figure.chart svg[role=img]').count(), 3);
  assert.ok((await page.locator('figure.chart rect[x]').count()) > 0);
  await shot('08-charts');

  // Every read above is in the audit log, by officer, with the subject only as a pseudonym.
  const audited = await (await page.request.get(`${env.admin}/console/api/records?service=console&limit=200`)).json();
  const ops = new Set(audited.records.map((r) => r.operation));
  for (const op of ['login', 'query', 'view-record', 'verify', 'citizen-view', 'who-can', 'charts']) {
    assert.ok(ops.has(op), `console read \`${op}\` is audited (have ${[...ops]})`);
  }
  assert.ok(audited.records.every((r) => r.consumer === 'console:officer' || r.consumer === 'console:unknown' || r.operation === 'login'));
  const citizenRead = audited.records.find((r) => r.operation === 'citizen-view');
  assert.match(citizenRead.subject, /^[0-9a-f]{64}$/);
  assert.ok(!JSON.stringify(audited).includes(env.pid), 'no clear national id in the log');

  // Change one byte inside record 2 on disk; verification reads the files and names it.
  const segDir = path.join(stateDir, 'audit', 'segments');
  const segment = path.join(segDir, fs.readdirSync(segDir).filter((f) => f.endsWith('.seg')).sort()[0]);
  const fd = fs.openSync(segment, 'r+');
  try {
    const header = Buffer.alloc(8);
    let offset = 0;
    for (let i = 0; i < 2; i++) {
      fs.readSync(fd, header, 0, 8, offset);
      offset += 8 + header.readUInt32LE(0);
    }
    fs.readSync(fd, header, 0, 8, offset);
    const len = header.readUInt32LE(0);
    const at = offset + 8 + Math.floor(len / 2);
    const byte = Buffer.alloc(1);
    fs.readSync(fd, byte, 0, 1, at);
    byte[0] = byte[0] === 0x41 ? 0x42 : 0x41;
    fs.writeSync(fd, byte, 0, 1, at);
  } finally {
    fs.closeSync(fd);
  }
  await page.goto(`${env.admin}/console/verify`);
  assert.match(await page.locator('.notice.fail').innerText(), /Verification FAILED/);
  assert.equal(await page.locator('.first-bad').innerText(), '2');
  assert.match(await page.locator('pre.report').innerText(), /record 2 is altered/);
  await shot('09-verify-tampered');

  // Log out: the session is gone.
  await Promise.all([page.waitForURL(/\/console\/login$/), page.click('header form.logout button')]);
  const after = await page.request.get(`${env.admin}/console/api/records`);
  assert.equal(after.status(), 401);
});
