// Drives the gateway's page for people (/ui/) in headless Chromium with a DevTools virtual
// passkey authenticator, then plays the app's backend with Node's fetch.
//
// Inputs (environment):
//   PARAPET_URL           the gateway, on the host name `localhost` (e.g. http://localhost:18080)
//   PARAPET_APP_ID        an app with grant `sign`…
//   PARAPET_APP_KEY       …its API key…
//   PARAPET_REDIRECT_URI  …and its registered redirect URI (nothing needs to listen there)
//   PARAPET_CHROMIUM      optional, the browser binary (default /usr/bin/chromium)
//   PARAPET_UI_TIMEOUT_MS optional, how long to wait for any one thing on the page (default 15000)
//
// Exit code 0 when every step passed, 1 otherwise, 2 on bad inputs. One line per step.

import { execFileSync, spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const TIMEOUT = Number(process.env.PARAPET_UI_TIMEOUT_MS || 15000);

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`ui.mjs: ${name} is not set (needs PARAPET_URL, PARAPET_APP_ID, PARAPET_APP_KEY, PARAPET_REDIRECT_URI)`);
    process.exit(2);
  }
  return v;
}

const BASE = need('PARAPET_URL').replace(/\/+$/, '');
const APP_ID = need('PARAPET_APP_ID');
const APP_KEY = need('PARAPET_APP_KEY');
const REDIRECT_URI = need('PARAPET_REDIRECT_URI');
const CHROMIUM = process.env.PARAPET_CHROMIUM || '/usr/bin/chromium';

if (new URL(BASE).hostname !== 'localhost') {
  console.error(`ui.mjs: PARAPET_URL must use the host name localhost (browsers refuse WebAuthn on IP addresses), got ${BASE}`);
  process.exit(2);
}

// An ERC-721 setApprovalForAll (needs the optional scope nft_operators), a shared fixture.
const NFT_APPROVE_ALL_BODY = JSON.parse(
  readFileSync(new URL('../fixtures/good/nft-approve-all.json', import.meta.url), 'utf8'),
);
// A small USDC transfer (unsigned EIP-1559 transaction), the repository's shared fixture.
const AUTHORIZE_BODY = JSON.parse(
  readFileSync(new URL('../fixtures/good/erc20-transfer-usdc-small.json', import.meta.url), 'utf8'),
);

const AUTHENTICATOR = {
  protocol: 'ctap2',
  transport: 'internal',
  hasResidentKey: true,
  hasUserVerification: true,
  isUserVerified: true,
  automaticPresenceSimulation: true,
};

// ------------------------------------------------------------------ helpers

class Failure extends Error {}

function assert(cond, message) {
  if (!cond) throw new Failure(message);
}

function b64ToB64url(s) {
  return s.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}


// A TOTP code (RFC 6238: SHA-1, 6 digits, 30 s) for an otpauth:// URI, as an authenticator app.
function totpCode(uri, at = Date.now()) {
  const secret = new URL(uri).searchParams.get('secret').replace(/=+$/, '').toUpperCase();
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 1000 / 30)));
  const mac = createHmac('sha1', key).update(counter).digest();
  const off = mac[mac.length - 1] & 0xf;
  const n = (mac.readUInt32BE(off) & 0x7fffffff) % 1000000;
  return String(n).padStart(6, '0');
}

// A passkey assertion made in the page (its virtual authenticator) for step-up options an API
// answered, in the JSON shape the gateway takes.
function assertInPage(page, options) {
  return page.evaluate(async (opts) => {
    const toBuf = (s) => {
      let b = s.replace(/-/g, '+').replace(/_/g, '/');
      while (b.length % 4) b += '=';
      return Uint8Array.from(atob(b), (c) => c.charCodeAt(0)).buffer;
    };
    const toB64url = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
      .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    const pk = { ...opts.publicKey, challenge: toBuf(opts.publicKey.challenge) };
    pk.allowCredentials = (pk.allowCredentials || []).map((c) => ({ ...c, id: toBuf(c.id) }));
    const cred = await navigator.credentials.get({ publicKey: pk });
    const r = cred.response;
    return {
      id: cred.id, rawId: toB64url(cred.rawId), type: cred.type, extensions: {},
      response: {
        authenticatorData: toB64url(r.authenticatorData), clientDataJSON: toB64url(r.clientDataJSON),
        signature: toB64url(r.signature), userHandle: r.userHandle ? toB64url(r.userHandle) : null,
      },
    };
  }, options);
}

const results = [];
const started = Date.now();

async function step(n, title, fn) {
  const t0 = Date.now();
  try {
    const detail = await fn();
    const ms = Date.now() - t0;
    results.push({ n, title, ok: true, ms });
    console.log(`ok   ${n} ${title} (${ms} ms)${detail ? ` — ${detail}` : ''}`);
  } catch (e) {
    const ms = Date.now() - t0;
    results.push({ n, title, ok: false, ms });
    console.log(`FAIL ${n} ${title} (${ms} ms): ${e instanceof Failure ? e.message : (e && e.stack) || e}`);
    throw e;
  }
}

// Node side: a JSON call to the gateway.
async function call(method, path, { headers = {}, body } = {}) {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: { Accept: 'application/json', ...(body ? { 'Content-Type': 'application/json' } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  return { status: res.status, json, text };
}

// Page side: a same-origin call with the page's cookie.
function pageGet(page, path) {
  return page.evaluate(async (p) => {
    const r = await fetch(p, { credentials: 'same-origin', cache: 'no-store' });
    const t = await r.text();
    let j = null;
    try { j = JSON.parse(t); } catch { j = null; }
    return { status: r.status, json: j, text: t };
  }, path);
}

// Page side: a same-origin POST with the page's cookie and its CSRF token (as the page sends it).
function pagePost(page, path, body) {
  return page.evaluate(async ([p, b]) => {
    const me = await (await fetch('/ui/api/me', { credentials: 'same-origin', cache: 'no-store' })).json();
    const r = await fetch(p, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': me.csrf || '' },
      body: JSON.stringify(b),
    });
    const t = await r.text();
    let j = null;
    try { j = JSON.parse(t); } catch { j = null; }
    return { status: r.status, json: j, text: t };
  }, [path, body]);
}

async function statusText(page) {
  return page.evaluate(() => {
    const s = document.querySelector('#status');
    return s && !s.hidden ? `${s.className}: ${s.textContent.trim()}` : '';
  }).catch(() => '');
}

// Waits for a condition on the page; on timeout says what #status showed.
async function waitFor(page, what, selector, opts = {}) {
  try {
    await page.waitForSelector(selector, { state: 'visible', timeout: TIMEOUT, ...opts });
  } catch (e) {
    const st = await statusText(page);
    throw new Failure(`${what}: ${selector} did not appear within ${TIMEOUT} ms${st ? ` (page status — ${st})` : ''}`);
  }
}

async function waitReady(page) {
  await waitFor(page, 'page load', 'body[data-ready="true"]', { state: 'attached' });
}

async function noErrorStatus(page, what) {
  const st = await statusText(page);
  assert(!st.startsWith('error'), `${what}: the page shows an error — ${st}`);
}

async function passkeyRows(page) {
  return page.$$eval('#passkeys li[data-credential-id]', (lis) => lis.map((li) => ({
    id: li.getAttribute('data-credential-id'),
    revoked: li.classList.contains('revoked'),
    hasRevokeButton: !!li.querySelector('button.revoke'),
  })));
}

async function waitPasskeyCount(page, n, what) {
  try {
    await page.waitForFunction((k) => document.querySelectorAll('#passkeys li[data-credential-id]').length === k, n, { timeout: TIMEOUT });
  } catch {
    const rows = await passkeyRows(page);
    throw new Failure(`${what}: expected ${n} passkeys listed, found ${rows.length}${(await statusText(page)) ? ` (page status — ${await statusText(page)})` : ''}`);
  }
}

// ------------------------------------------------------------------ the run

const state = {};
let browser;
let page;
const consoleLines = [];

async function main() {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext();
  page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (m) => consoleLines.push(`[console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${e.message}`));
  page.on('dialog', (d) => d.accept());

  // The app's redirect URI: nothing listens there, so answer it here.
  const redirect = new URL(REDIRECT_URI);
  await context.route((url) => url.origin === redirect.origin && url.pathname === redirect.pathname, (route) =>
    route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>App callback</title><p>Back at the app.</p>' }));

  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  state.authA = (await cdp.send('WebAuthn.addVirtualAuthenticator', { options: AUTHENTICATOR })).authenticatorId;

  await step(1, 'register a new user with a passkey', async () => {
    await page.goto(`${BASE}/ui/`);
    await waitReady(page);
    await waitFor(page, 'logged-out view', '#register');
    await page.click('#register');
    await waitFor(page, 'after registration', '#view-user #current-user:not(:empty)');
    await noErrorStatus(page, 'registration');
    const shown = (await page.textContent('#current-user')).trim();
    assert(/^[0-9a-f-]{36}$/i.test(shown), `the user id shown is not a UUID: "${shown}"`);
    // The page shows the account first and says the id in #status right after (one await
    // later): wait for it rather than read it at once.
    await page.waitForFunction((id) => {
      const s = document.querySelector('#status');
      return s && !s.hidden && s.textContent.includes(id);
    }, shown, { timeout: TIMEOUT }).catch(() => {});
    const status = await statusText(page);
    assert(status.includes(shown), `the status should tell the new user id, got "${status}"`);
    const stored = await page.evaluate(() => localStorage.getItem('parapet.user'));
    assert(stored === shown, `localStorage parapet.user is "${stored}", expected "${shown}"`);
    const me = await pageGet(page, '/ui/api/me');
    assert(me.status === 200, `GET /ui/api/me answered ${me.status}: ${me.text}`);
    assert(me.json && String(me.json.user) === shown, `GET /ui/api/me names user ${me.json && me.json.user}, the page shows ${shown}`);
    assert(me.json.csrf, 'GET /ui/api/me has no csrf token');
    const creds = (await cdp.send('WebAuthn.getCredentials', { authenticatorId: state.authA })).credentials;
    assert(creds.length === 1, `the authenticator holds ${creds.length} credentials, expected 1`);
    state.credA = b64ToB64url(creds[0].credentialId);
    await waitPasskeyCount(page, 1, 'passkey list after registration');
    const rows = await passkeyRows(page);
    assert(rows[0].id === state.credA, `the listed passkey is ${rows[0].id}, the authenticator made ${state.credA}`);
    state.user = shown;
    return `user ${shown}`;
  });

  await step(2, 'add a second passkey (backup device), approved with the first', async () => {
    // Without a step-up the gateway refuses a further passkey for someone who has one.
    const direct = await pagePost(page, '/ui/api/register/start', {});
    assert(direct.status === 403 && direct.json && direct.json.code === 'step_up_required',
      `register/start without a step-up answered ${direct.status}: ${direct.text}`);
    // The first passkey approves the addition...
    await page.click('#add-passkey');
    await waitFor(page, 'the second click after the step-up', '#add-passkey-next:not([hidden]) #add-passkey-now');
    // ...then a second device makes the new one: the first authenticator would refuse (its
    // credential is excluded).
    await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId: state.authA });
    state.authB = (await cdp.send('WebAuthn.addVirtualAuthenticator', { options: AUTHENTICATOR })).authenticatorId;
    await page.click('#add-passkey-now');
    await waitPasskeyCount(page, 2, 'passkey list after adding one');
    await noErrorStatus(page, 'adding a passkey');
    const creds = (await cdp.send('WebAuthn.getCredentials', { authenticatorId: state.authB })).credentials;
    assert(creds.length === 1, `the second authenticator holds ${creds.length} credentials, expected 1`);
    state.credB = b64ToB64url(creds[0].credentialId);
    const rows = await passkeyRows(page);
    const ids = rows.map((r) => r.id).sort();
    assert(JSON.stringify(ids) === JSON.stringify([state.credA, state.credB].sort()),
      `listed passkeys ${ids.join(', ')} are not the two made (${state.credA}, ${state.credB})`);
    assert(rows.every((r) => !r.revoked && r.hasRevokeButton), 'every fresh passkey should be active with a Revoke button');
    const api = await pageGet(page, '/ui/api/passkeys');
    assert(api.status === 200 && api.json && api.json.passkeys.length === 2, `GET /ui/api/passkeys: ${api.status} ${api.text}`);
    assert((await page.textContent('#current-user')).trim() === state.user, 'the user changed while adding a passkey');
    return '2 passkeys listed';
  });

  await step(3, 'pair a device with a code from the page, then remove it', async () => {
    await page.click('#pair-device');
    await waitFor(page, 'pairing command', '#pairing:not([hidden]) #pairing-command:not(:empty)');
    const command = (await page.textContent('#pairing-command')).trim();
    const code = command.split(' ').pop();
    assert(/^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$/.test(code), `no pairing code in "${command}"`);
    // The device's side of `parapet device pair`.
    const paired = await call('POST', '/v1/devices/pair', { body: { code, name: 'browser-test device' } });
    assert(paired.status === 200 && paired.json && paired.json.device_token, `pairing answered ${paired.status}: ${paired.text}`);
    assert(paired.json.user_id === state.user, `the device was paired to ${paired.json.user_id}, not ${state.user}`);
    const auth = { Authorization: `Device ${paired.json.device_token}` };
    const me = await call('GET', '/v1/device', { headers: auth });
    assert(me.status === 200, `GET /v1/device answered ${me.status}: ${me.text}`);
    await page.reload();
    await waitReady(page);
    const row = `#devices li[data-device-id="${paired.json.device_id}"]`;
    await waitFor(page, 'the paired device in the list', row);
    await page.click(`${row} button.revoke-device`);
    await waitFor(page, 'the device shown as removed', `#devices li.revoked[data-device-id="${paired.json.device_id}"]`);
    const after = await call('GET', '/v1/device', { headers: auth });
    assert(after.status === 401, `a removed device still answers ${after.status}: ${after.text}`);
    return `device ${paired.json.device_id.slice(0, 12)}… paired, listed, removed`;
  });

  await step(4, 'log out, then log in through the app hand-off and consent', async () => {
    await page.click('#logout');
    await waitFor(page, 'after logout', '#view-anon #login');
    const me = await pageGet(page, '/ui/api/me');
    assert(me.status === 401, `GET /ui/api/me after logout answered ${me.status}, expected 401`);
    assert(me.json && me.json.code === 'session_invalid', `GET /ui/api/me after logout: code ${me.json && me.json.code}, expected session_invalid`);

    const q = new URLSearchParams({ app: APP_ID, redirect_uri: REDIRECT_URI, state: 'xyz' });
    await page.goto(`${BASE}/ui/login?${q}`);
    await waitReady(page);
    await waitFor(page, 'hand-off login', '#view-anon #login');
    const prefilled = await page.inputValue('#user-id');
    assert(prefilled === state.user, `the user id field is "${prefilled}", expected the remembered "${state.user}"`);
    await page.click('#login');
    await waitFor(page, 'consent screen after login', '#consent #approve');
    const heading = (await page.textContent('#consent-heading')).trim();
    assert(/asks to:$/.test(heading), `consent heading is "${heading}"`);
    const scopes = await page.$$eval('#consent input[type=checkbox][id^="scope-"]', (bs) =>
      bs.map((b) => ({ id: b.value, checked: b.checked, disabled: b.disabled })));
    for (const s of scopes) {
      if (s.disabled) assert(s.checked, `required scope ${s.id} is not checked`);
      else assert(!s.checked, `optional scope ${s.id} is checked by default`);
    }
    const required = scopes.filter((s) => s.disabled).map((s) => s.id);
    // Approve only the required scopes (the optional ones stay unchecked).
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(REDIRECT_URI), { timeout: TIMEOUT }).catch(async () => {
        throw new Failure(`no redirect to ${REDIRECT_URI} after approving (page status — ${await statusText(page)}; at ${page.url()})`);
      }),
      page.click('#approve'),
    ]);
    const back = new URL(page.url());
    assert(back.origin + back.pathname === redirect.origin + redirect.pathname, `landed on ${page.url()}`);
    assert(back.searchParams.get('state') === 'xyz', `state came back as "${back.searchParams.get('state')}", expected "xyz"`);
    state.code = back.searchParams.get('code');
    assert(state.code, `no code in ${page.url()}`);
    return `${scopes.length} scopes offered, approved required [${required.join(', ')}]`;
  });

  await step(5, 'exchange the code and authorize as the app (Node)', async () => {
    const auth = { Authorization: `Bearer ${APP_KEY}` };
    const ex = await call('POST', '/v1/sessions/exchange', { headers: auth, body: { code: state.code, redirect_uri: REDIRECT_URI } });
    assert(ex.status === 200, `POST /v1/sessions/exchange answered ${ex.status}: ${ex.text}`);
    assert(ex.json && typeof ex.json.session_token === 'string' && ex.json.session_token, `exchange answer has no session_token: ${ex.text}`);
    state.session = ex.json.session_token;
    // The contract says `user`; the /v1 session answers name it `user_id`.
    const exUser = ex.json.user ?? ex.json.user_id;
    assert(String(exUser) === state.user, `exchange names user ${exUser}, expected ${state.user}: ${ex.text}`);
    const again = await call('POST', '/v1/sessions/exchange', { headers: auth, body: { code: state.code, redirect_uri: REDIRECT_URI } });
    assert(again.status >= 400 && again.status < 500, `exchanging the same code twice answered ${again.status}, expected 4xx: ${again.text}`);
    const az = await call('POST', '/v1/authorize', {
      headers: { ...auth, 'Parapet-Session': ex.json.session_token },
      body: AUTHORIZE_BODY,
    });
    assert(az.status === 200, `POST /v1/authorize answered ${az.status}: ${az.text}`);
    assert(az.json && typeof az.json.decision !== 'undefined', `POST /v1/authorize answer has no decision: ${az.text}`);
    assert(az.json.decision === 'allow', `a small USDC transfer in the approved scope was not allowed: ${az.text}`);
    // Only the required scopes were approved: an NFT operator approval (scope nft_operators)
    // is denied as not approved, not as not permitted.
    const nft = await call('POST', '/v1/authorize', {
      headers: { ...auth, 'Parapet-Session': ex.json.session_token },
      body: NFT_APPROVE_ALL_BODY,
    });
    assert(nft.status === 200 && nft.json && nft.json.decision === 'deny', `setApprovalForAll answered ${nft.status}: ${nft.text}`);
    const missing = nft.json.scope_not_approved || [];
    assert(missing.includes('nft_operators'), `setApprovalForAll deny does not name nft_operators: ${nft.text}`);
    return `second exchange ${again.status} (${again.json && again.json.code}), transfer allow, NFT operator deny scope_not_approved [${missing.join(', ')}]`;
  });

  await step(6, 'a device makes a wallet; a large transfer is approved with a passkey on the page and signed', async () => {
    const bin = need('PARAPET_BIN');
    const file = need('PARAPET_DEVICE_FILE');
    const env = { ...process.env, PARAPET_DEVICE_PASSPHRASE: 'browser test passphrase', PARAPET_DEVICE_FILE: file };
    const cli = (args) => execFileSync(bin, args, { env, encoding: 'utf8', timeout: TIMEOUT * 2 });
    await page.goto(`${BASE}/ui/`);
    await waitReady(page);
    await page.click('#pair-device');
    await waitFor(page, 'pairing command', '#pairing:not([hidden]) #pairing-command:not(:empty)');
    const code = (await page.textContent('#pairing-command')).trim().split(' ').pop();
    cli(['device', 'pair', '--gateway', BASE, code, '--name', 'browser-test laptop']);
    // The first wallet also sets the recovery secret: the device waits while the person
    // approves it with a passkey on the page.
    const creating = spawn(bin, ['wallet', 'create', '--json'], { env });
    let createdOut = '';
    let createdErr = '';
    creating.stdout.on('data', (d) => { createdOut += d; });
    creating.stderr.on('data', (d) => { createdErr += d; });
    const createdExit = new Promise((resolve) => creating.on('exit', resolve));
    const approval = '#approvals li.approval button.approve-setup';
    const asked = Date.now();
    for (;;) {
      await page.reload();
      await waitReady(page);
      if (await page.$(approval)) break;
      if (Date.now() - asked > TIMEOUT) throw new Failure(`no recovery set-up to approve on the page (CLI said: ${createdErr})`);
      await new Promise((r) => setTimeout(r, 250));
    }
    await page.click(approval);
    const exitCode = await createdExit;
    assert(exitCode === 0, `wallet create exited ${exitCode}: ${createdErr}`);
    assert(createdErr.includes('approval with a passkey'), `wallet create did not say it waits for the approval: ${createdErr}`);
    const created = JSON.parse(createdOut);
    const address = created.address;
    state.recoverySecret = created.recovery_secret;
    assert(/^0x[0-9a-f]{40}$/.test(address), `wallet create printed ${address}`);
    // 6 native in one transaction: the shipped @step_up forbid asks for the owner's passkey.
    const body = {
      chain_id: 1,
      transaction_request: {
        type: '0x2', chainId: '0x1', nonce: '0x1', gas: '0x5208', maxFeePerGas: '0x6fc23ac00',
        maxPriorityFeePerGas: '0x3b9aca00', to: '0x2222222222222222222222222222222222222222',
        value: '0x' + (6n * 10n ** 18n).toString(16), data: '0x',
      },
    };
    const auth = { Authorization: `Bearer ${APP_KEY}`, 'Parapet-Session': state.session };
    const sign = await call('POST', `/v1/wallets/${address}/sign`, { headers: { ...auth, 'Idempotency-Key': 'browser-1' }, body });
    assert(sign.status === 403 && sign.json && sign.json.code === 'step_up_required', `sign answered ${sign.status}: ${sign.text}`);
    const id = sign.json.signing_request;
    await page.reload();
    await waitReady(page);
    await waitFor(page, 'the wallet in the list', `#wallets li[data-address="${address}"]`);
    const row = `#signing-requests li[data-request-id="${id}"]`;
    await waitFor(page, 'the request waiting for approval', `${row} button.approve-request`);
    const shown = await page.textContent(row);
    assert(shown.includes('6 native') && shown.includes('0x2222222222222222222222222222222222222222'), `the request shows "${shown}"`);
    await page.click(`${row} button.approve-request`);
    await waitFor(page, 'the request approved', `${row}[data-state="authorized"]`);
    const got = await call('GET', `/v1/signing-requests/${id}`, { headers: { Authorization: `Bearer ${APP_KEY}` } });
    assert(got.status === 200 && got.json.state === 'authorized' && got.json.decision.facts.step_up === true, `after approval: ${got.status} ${got.text}`);
    const signed = JSON.parse(cli(['wallet', 'sign', '--wallet', address, '--request', id, '--yes', '--json']));
    assert(/^0x[0-9a-f]+$/.test(signed.signed_transaction || ''), `wallet sign printed ${JSON.stringify(signed)}`);
    const done = await call('GET', `/v1/signing-requests/${id}`, { headers: { Authorization: `Bearer ${APP_KEY}` } });
    assert(done.json.state === 'signed' && done.json.tx_hash === signed.tx_hash, `after signing: ${done.text}`);
    return `wallet ${address.slice(0, 10)}…, request approved on the page, signed ${signed.tx_hash.slice(0, 12)}…`;
  });

  await step(7, 'security panel: a recovery cancelled, a new device approved, TOTP by QR, a kit downloaded and shown stale after a refresh', async () => {
    const bin = need('PARAPET_BIN');
    const file = need('PARAPET_DEVICE_FILE');
    const pass = 'browser test passphrase';
    const env = { ...process.env, PARAPET_DEVICE_PASSPHRASE: pass, PARAPET_DEVICE_FILE: file };
    const cli = (args, extra = {}) => execFileSync(bin, args, { env: { ...env, ...extra }, encoding: 'utf8', timeout: TIMEOUT * 2 });
    const auth = { Authorization: `Bearer ${APP_KEY}`, 'Parapet-Session': state.session };
    const wallets = await call('GET', '/v1/wallets', { headers: auth });
    const address = wallets.json.wallets[0].address;

    // Someone with the recovery secret opens a recovery from a new machine; the page shows it
    // and the owner cancels it with a passkey.
    const secret = state.recoverySecret;
    assert(secret, 'no recovery secret from wallet create');
    const thief = file.replace(/\.json$/, '') + '-thief.json';
    cli(['recovery', 'start', '--gateway', BASE, '--user', address, '--name', 'not mine', '--json'], { PARAPET_DEVICE_FILE: thief, PARAPET_RECOVERY_SECRET: secret });
    await page.goto(`${BASE}/ui/`);
    await waitReady(page);
    await waitFor(page, 'the open recovery', '#recoveries li.recovery[data-state="open"] button.cancel-recovery');
    await page.click('#recoveries li.recovery[data-state="open"] button.cancel-recovery');
    await waitFor(page, 'the recovery cancelled', '#recoveries li.recovery[data-state="cancelled"]');
    await noErrorStatus(page, 'cancelling the recovery');

    // A second device asks for the wallets; the page shows its code and approves it with a
    // passkey; the first device seals to it after checking the same code.
    await page.click('#pair-device');
    await waitFor(page, 'pairing command', '#pairing:not([hidden]) #pairing-command:not(:empty)');
    const pairCode = (await page.textContent('#pairing-command')).trim().split(' ').pop();
    const phone = file.replace(/\.json$/, '') + '-phone.json';
    cli(['device', 'pair', '--gateway', BASE, pairCode, '--name', 'browser-test phone'], { PARAPET_DEVICE_FILE: phone });
    const link = spawn(bin, ['device', 'link', '--json', '--wait-secs', '60'], { env: { ...env, PARAPET_DEVICE_FILE: phone } });
    let linkErr = '';
    let linkOut = '';
    link.stdout.on('data', (d) => { linkOut += d; });
    const shortCode = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Failure(`device link showed no code: ${linkErr}`)), TIMEOUT);
      link.stderr.on('data', (d) => {
        linkErr += d;
        const m = linkErr.match(/Short code of this device: (\S+)/);
        if (m) { clearTimeout(timer); resolve(m[1]); }
      });
    });
    const linked = new Promise((resolve) => link.on('close', resolve));
    await page.reload();
    await waitReady(page);
    await waitFor(page, 'the device request', '#transfers li.transfer .short-code');
    const shownCode = (await page.textContent('#transfers li.transfer .short-code')).trim();
    assert(shownCode === shortCode, `the page shows ${shownCode}, the new device ${shortCode}`);
    await page.click('#transfers li.transfer button.approve-transfer');
    await waitFor(page, 'no waiting request', '#transfers li.muted');
    cli(['device', 'add', '--code', shortCode, '--json']);
    const linkCode = await linked;
    assert(linkCode === 0 && JSON.parse(linkOut).wallets[0].address === address, `device link ended ${linkCode}: ${linkOut} ${linkErr}`);

    // TOTP: the page draws the otpauth URI as a QR code after a passkey; a code confirms it.
    await page.reload();
    await waitReady(page);
    await page.click('#totp-enrol');
    await waitFor(page, 'the QR code', '#totp-setup:not([hidden]) #totp-qr[src^="data:image/svg+xml;base64,"]');
    const uri = (await page.textContent('#totp-uri')).trim();
    assert(uri.startsWith('otpauth://totp/'), `the page shows ${uri}`);
    await page.fill('#totp-code', totpCode(uri));
    await page.click('#totp-confirm');
    await waitFor(page, 'TOTP active', '#totp-enrol', { state: 'hidden' });
    const sec = await pageGet(page, '/ui/api/security');
    assert(sec.json.totp.active === true, `security says ${sec.text}`);

    // A kit downloaded with a passkey is the current epoch's; after a refresh the page says
    // the downloaded copy is stale.
    const kitRow = `#kits li[data-address="${address}"]`;
    await waitFor(page, 'the kit row', `${kitRow} button.download-kit`);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(`${kitRow} button.download-kit`)]);
    const kit = JSON.parse(readFileSync(await download.path(), 'utf8'));
    assert(kit.address === address && kit.epoch === 0 && kit.format === 'parapet-backup-kit-v1', `the kit is ${JSON.stringify(kit).slice(0, 200)}`);
    const asked = await call('POST', `/v1/wallets/${address}/refresh`, { headers: auth, body: {} });
    assert(asked.status === 403 && asked.json.code === 'step_up_required', `refresh answered ${asked.text}`);
    const assertion = await assertInPage(page, asked.json.step_up.options);
    const approved = await call('POST', `/v1/operations/${asked.json.operation}/step-up`, { headers: auth, body: { ceremony_id: asked.json.step_up.ceremony_id, credential: assertion } });
    assert(approved.status === 200, `approving the refresh: ${approved.text}`);
    const refreshed = JSON.parse(cli(['wallet', 'refresh', '--wallet', address, '--json']));
    assert(refreshed.epoch === 1, `refresh printed ${JSON.stringify(refreshed)}`);
    await page.reload();
    await waitReady(page);
    await waitFor(page, 'the stale kit notice', `${kitRow} .kit-stale`);
    const note = await page.textContent(`${kitRow} .kit-note`);
    assert(note.includes('stale'), `the kit row says "${note}"`);
    await waitFor(page, 'the stale phone', `#devices li .device-stale`);
    return `recovery cancelled, phone ${shortCode} approved and linked, TOTP on, kit epoch 0 stale after the refresh`;
  });

  await step(8, 'revoke a passkey on the page, then log out', async () => {
    await page.goto(`${BASE}/ui/`);
    await waitReady(page);
    await waitFor(page, 'account view', '#view-user #current-user:not(:empty)');
    await waitPasskeyCount(page, 2, 'passkey list');
    // The first device is "lost": revoke its passkey.
    await page.click(`#passkeys button.revoke[data-credential-id="${state.credA}"]`);
    try {
      await page.waitForSelector(`#passkeys li.revoked[data-credential-id="${state.credA}"]`, { state: 'attached', timeout: TIMEOUT });
    } catch {
      throw new Failure(`passkey ${state.credA} is not shown as revoked (page status — ${await statusText(page)})`);
    }
    await noErrorStatus(page, 'revoking');
    const rows = await passkeyRows(page);
    const other = rows.find((r) => r.id === state.credB);
    assert(other && !other.revoked, 'the other passkey should still be active');
    const api = await pageGet(page, '/ui/api/passkeys');
    const a = api.json && api.json.passkeys.find((p) => p.credential_id === state.credA);
    assert(a && a.revoked_at, `GET /ui/api/passkeys does not show ${state.credA} revoked: ${api.text}`);
    await page.click('#logout');
    await waitFor(page, 'after logout', '#view-anon #login');
    const me = await pageGet(page, '/ui/api/me');
    assert(me.status === 401, `GET /ui/api/me after logout answered ${me.status}, expected 401`);
    return `revoked ${state.credA.slice(0, 10)}…`;
  });
}

let failed = false;
try {
  await main();
} catch (e) {
  failed = true;
  if (!(e instanceof Failure) && !results.some((r) => !r.ok)) {
    console.log(`FAIL setup: ${(e && e.stack) || e}`);
  }
  if (page) {
    console.log(`  page: ${page.url()}`);
    const st = await statusText(page);
    if (st) console.log(`  status: ${st}`);
  }
  for (const l of consoleLines.slice(-15)) console.log(`  ${l}`);
} finally {
  if (browser) await browser.close().catch(() => {});
}
const passed = results.filter((r) => r.ok).length;
console.log(`${failed ? 'FAILED' : 'passed'}: ${passed}/8 steps in ${Date.now() - started} ms`);
process.exit(failed ? 1 : 0);
