// Parapet's page for people: passkeys, consent, and the hand-off back to an app.
// Plain browser JavaScript, no build step. Everything shown from the server is set with
// textContent, never parsed as HTML.
'use strict';

(() => {
  const USER_KEY = 'parapet.user';

  const state = {
    me: null, // GET /ui/api/me when logged in
    csrf: null, // sent as X-CSRF-Token on every POST while logged in
    handoff: null, // {app, redirect_uri, state} on /ui/login?app=…
    justRegistered: false,
    consent: null, // {mode: 'handoff'|'review', view: GET /ui/api/consent answer}
    working: false,
    linkError: null,
    link: null, // {code, name}: a page link waiting for the person's yes
    registration: null, // a further passkey's registration, approved with a step-up
  };

  const $ = (sel) => document.querySelector(sel);

  // ---------------------------------------------------------------- base64url

  function b64urlToBuf(s) {
    if (typeof s !== 'string') throw new TypeError('expected a base64url string');
    let b64 = s.replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function bufToB64url(buf) {
    const bytes = buf instanceof ArrayBuffer ? new Uint8Array(buf)
      : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    let bin = '';
    for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message, requestId) {
      super(message);
      this.status = status;
      this.code = code;
      this.requestId = requestId || null;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (method !== 'GET') {
      headers['Content-Type'] = 'application/json';
      if (state.csrf) headers['X-CSRF-Token'] = state.csrf;
      init.body = JSON.stringify(body || {});
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network', 'Could not reach the gateway. Check your connection and try again.');
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (!res.ok) {
      const ok = data && typeof data === 'object';
      const message = ok && typeof data.message === 'string' && data.message
        ? data.message : `The gateway answered with an error (HTTP ${res.status}).`;
      throw new ApiError(res.status, ok && data.code ? String(data.code) : `http_${res.status}`,
        message, ok ? data.request_id : null);
    }
    if (!data || typeof data !== 'object') {
      throw new ApiError(res.status, 'bad_response', 'The gateway sent an answer this page could not read.');
    }
    return data;
  }

  // ---------------------------------------------------------------- WebAuthn

  function webauthnAvailable() {
    return typeof window.PublicKeyCredential === 'function' && navigator.credentials
      && typeof navigator.credentials.create === 'function';
  }

  // webauthn-rs sends {"publicKey": {...}} with base64url binary fields.
  function creationOptions(options) {
    const pk = structuredClone(options.publicKey || options);
    pk.challenge = b64urlToBuf(pk.challenge);
    pk.user = { ...pk.user, id: b64urlToBuf(pk.user.id) };
    if (Array.isArray(pk.excludeCredentials)) {
      pk.excludeCredentials = pk.excludeCredentials.map((c) => ({ ...c, id: b64urlToBuf(c.id) }));
    }
    return pk;
  }

  function requestOptions(options) {
    const pk = structuredClone(options.publicKey || options);
    pk.challenge = b64urlToBuf(pk.challenge);
    if (Array.isArray(pk.allowCredentials)) {
      pk.allowCredentials = pk.allowCredentials.map((c) => ({ ...c, id: b64urlToBuf(c.id) }));
    }
    return pk;
  }

  function registrationJSON(cred) {
    return {
      id: cred.id,
      rawId: bufToB64url(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: bufToB64url(cred.response.attestationObject),
        clientDataJSON: bufToB64url(cred.response.clientDataJSON),
      },
      extensions: {},
    };
  }

  function assertionJSON(cred) {
    const r = cred.response;
    return {
      id: cred.id,
      rawId: bufToB64url(cred.rawId),
      type: cred.type,
      response: {
        authenticatorData: bufToB64url(r.authenticatorData),
        clientDataJSON: bufToB64url(r.clientDataJSON),
        signature: bufToB64url(r.signature),
        userHandle: r.userHandle && r.userHandle.byteLength ? bufToB64url(r.userHandle) : null,
      },
      extensions: {},
    };
  }

  // A browser-side failure (no request reached the server) in words.
  function webauthnMessage(e) {
    switch (e && e.name) {
      case 'NotAllowedError':
        return 'The passkey request was cancelled or timed out. Nothing was changed.';
      case 'InvalidStateError':
        return 'This authenticator already holds a passkey for this account. Use another device or security key.';
      case 'SecurityError':
        return 'Passkeys cannot be used from this address. Open the page at the gateway\'s configured address (for example http://localhost, not an IP address).';
      case 'NotSupportedError':
        return 'This browser or authenticator does not support the kind of passkey the gateway asks for.';
      case 'AbortError':
        return 'The passkey request was interrupted.';
      default:
        return `The passkey request failed${e && e.message ? `: ${e.message}` : '.'}`;
    }
  }

  async function createCredential(options) {
    if (!webauthnAvailable()) throw new ApiError(0, 'webauthn_unavailable', 'This browser does not support passkeys.');
    try {
      return await navigator.credentials.create({ publicKey: creationOptions(options) });
    } catch (e) {
      throw new ApiError(0, 'webauthn', webauthnMessage(e));
    }
  }

  async function getCredential(options) {
    if (!webauthnAvailable()) throw new ApiError(0, 'webauthn_unavailable', 'This browser does not support passkeys.');
    try {
      return await navigator.credentials.get({ publicKey: requestOptions(options) });
    } catch (e) {
      throw new ApiError(0, 'webauthn', webauthnMessage(e));
    }
  }

  // ---------------------------------------------------------------- small helpers

  function idOf(v) {
    if (v && typeof v === 'object') return v.id == null ? null : String(v.id);
    return v == null || v === '' ? null : String(v);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('data-')) node.setAttribute(k, v);
      else if (k in node) node[k] = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c == null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function timeEl(iso) {
    if (!iso) return el('span', { class: 'muted', text: 'never' });
    const d = new Date(iso);
    const shown = Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
    return el('time', { dateTime: iso, title: iso, text: shown });
  }

  function shortId(v) {
    const id = v == null ? '' : String(v);
    return id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id;
  }

  function setStatus(message, kind, requestId) {
    const box = $('#status');
    box.replaceChildren();
    if (!message) { box.hidden = true; box.className = ''; return; }
    box.className = kind || 'info';
    box.append(el('span', { class: 'message', text: message }));
    if (requestId) box.append(' ', el('span', { class: 'request-id', text: `(request ${requestId})` }));
    box.hidden = false;
  }

  function showError(e) {
    if (e instanceof ApiError) {
      if (e.status === 401 && e.code === 'session_invalid' && state.me) {
        state.me = null;
        state.csrf = null;
        render();
        setStatus('Your session has ended. Log in again.', 'error', e.requestId);
        return;
      }
      setStatus(e.message, 'error', e.requestId);
    } else {
      setStatus(`Something went wrong in this page: ${e && e.message ? e.message : e}`, 'error');
      console.error(e);
    }
  }

  // Runs one user action at a time, with the page's buttons disabled meanwhile.
  async function action(fn) {
    if (state.working) return;
    state.working = true;
    const main = document.querySelector('main');
    main.setAttribute('aria-busy', 'true');
    const disabled = [...main.querySelectorAll('button:not([disabled])')];
    disabled.forEach((b) => { b.disabled = true; });
    setStatus(null);
    try {
      await fn();
    } catch (e) {
      showError(e);
    } finally {
      disabled.forEach((b) => { if (b.isConnected && !b.dataset.keepDisabled) b.disabled = false; });
      main.removeAttribute('aria-busy');
      state.working = false;
    }
  }

  // ---------------------------------------------------------------- session

  async function loadMe() {
    try {
      const me = await api('GET', '/ui/api/me');
      state.me = me;
      if (me.csrf) state.csrf = me.csrf;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        state.me = null;
        state.csrf = null;
      } else {
        throw e;
      }
    }
  }

  function currentUser() {
    return state.me ? idOf(state.me.user) : null;
  }

  function rememberUser(user) {
    try { localStorage.setItem(USER_KEY, user); } catch (e) { /* storage may be off */ }
  }

  function rememberedUser() {
    try { return localStorage.getItem(USER_KEY) || ''; } catch (e) { return ''; }
  }

  // The session may serve this hand-off only when it was begun for that app.
  function sessionFitsHandoff() {
    return !!(state.me && state.handoff && idOf(state.me.app) === state.handoff.app);
  }

  // ---------------------------------------------------------------- actions

  // A person who has a passkey adds another only after a step-up with one they have; the
  // registration it approves is made with a second click (often on another authenticator).
  async function addPasskey() {
    if (!(state.me && state.me.has_passkey)) return register();
    state.registration = await stepUp('passkey_add', '');
    $('#add-passkey-next').hidden = false;
    setStatus('Confirmed with your passkey. Now create the new one.', 'ok');
  }

  async function addPasskeyNow() {
    const start = state.registration;
    if (!start) return addPasskey();
    state.registration = null;
    $('#add-passkey-next').hidden = true;
    return register(start);
  }

  async function register(approved) {
    const addingToAccount = !!state.me;
    const start = approved || await api('POST', '/ui/api/register/start', {});
    const cred = await createCredential(start.options);
    const done = await api('POST', '/ui/api/register/finish', {
      ceremony_id: start.ceremony_id,
      user: start.user,
      credential: registrationJSON(cred),
    });
    if (done.csrf) state.csrf = done.csrf;
    const user = idOf(done.user);
    if (user) rememberUser(user);
    if (addingToAccount) {
      await loadMe();
      await renderAccount();
      setStatus(`Passkey ${shortId(String(done.credential_id || cred.id))} added.`, 'ok');
      return;
    }
    state.justRegistered = true;
    $('#user-id').value = user || '';
    await afterLogin();
    const next = state.handoff && !sessionFitsHandoff()
      ? ' Now log in with your new passkey to continue to the app.' : '';
    setStatus(`Account created. Your user id is ${user}. Write it down: you need it to log in.${next}`, 'ok');
  }

  async function login() {
    const input = $('#user-id');
    const user = input.value.trim();
    if (!user) {
      setStatus('Enter your user id to log in.', 'error');
      input.focus();
      return;
    }
    const body = { user };
    if (state.handoff) body.app = state.handoff.app;
    const start = await api('POST', '/ui/api/login/start', body);
    const cred = await getCredential(start.options);
    const finish = { ceremony_id: start.ceremony_id, credential: assertionJSON(cred) };
    if (body.app) finish.app = body.app;
    const done = await api('POST', '/ui/api/login/finish', finish);
    if (done.csrf) state.csrf = done.csrf;
    rememberUser(idOf(done.user) || user);
    state.justRegistered = false;
    await afterLogin();
  }

  async function afterLogin() {
    await loadMe();
    if (!state.me) throw new ApiError(401, 'session_invalid', 'The gateway did not keep the session. Are cookies allowed for this site?');
    if (state.handoff) {
      await continueHandoff();
    } else {
      render();
      await renderAccount();
    }
  }

  async function logout() {
    try {
      await api('POST', '/ui/api/logout', {});
    } finally {
      state.me = null;
      state.csrf = null;
      state.consent = null;
      state.justRegistered = false;
    }
    render();
    setStatus('You are logged out.', 'ok');
  }

  async function revokePasskey(credentialId, lastActive) {
    if (lastActive) {
      setStatus('This is your last passkey: add another before you revoke it.', 'error');
      return;
    }
    await stepUp('passkey_revoke', credentialId);
    await loadMe();
    if (!state.me) {
      render();
      setStatus(`Passkey ${shortId(credentialId)} revoked; this session was made with it, so you are logged out.`, 'ok');
      return;
    }
    await renderAccount();
    setStatus(`Passkey ${shortId(credentialId)} revoked.`, 'ok');
  }

  async function withdrawConsent(appId, appName) {
    await api('POST', '/ui/api/consent/revoke', { app: appId });
    await renderAccount();
    setStatus(`You withdrew your consent for ${appName}.`, 'ok');
  }

  // The hand-off: consent if needed, then the code, then back to the app.
  async function continueHandoff() {
    if (!sessionFitsHandoff()) {
      render();
      setStatus('Log in with your passkey to continue to the app.', 'info');
      return;
    }
    // The return address is checked before anything is shown or saved.
    const view = await api('GET', `/ui/api/consent?app=${encodeURIComponent(state.handoff.app)}`
      + `&redirect_uri=${encodeURIComponent(state.handoff.redirect_uri)}`);
    if (view.needs_consent === false) {
      await finishHandoff();
      return;
    }
    state.consent = { mode: 'handoff', view };
    render();
  }

  async function finishHandoff() {
    const h = state.handoff;
    const res = await api('POST', '/ui/api/handoff', { app: h.app, redirect_uri: h.redirect_uri, state: h.state });
    const target = typeof res.redirect === 'string' ? res.redirect : '';
    // Go only where the app asked to be sent back to.
    if (!target.startsWith(h.redirect_uri)) {
      throw new ApiError(0, 'bad_redirect', 'The gateway answered with a return address that is not the app\'s. Stopped here.');
    }
    setStatus('Returning to the app…', 'ok');
    $('#approve').dataset.keepDisabled = '1';
    window.location.href = target;
  }

  async function reviewConsent(appId) {
    const view = await api('GET', `/ui/api/consent?app=${encodeURIComponent(appId)}`);
    state.consent = { mode: 'review', view };
    render();
  }

  async function approveConsent() {
    const c = state.consent;
    if (!c) return;
    const appId = idOf(c.view.app);
    const scopes = [...document.querySelectorAll('#scopes input[type=checkbox]')]
      .filter((b) => b.checked)
      .map((b) => b.value);
    await api('POST', '/ui/api/consent', { app: appId, scopes });
    if (c.mode === 'handoff') {
      await finishHandoff();
      return;
    }
    state.consent = null;
    render();
    await renderAccount();
    setStatus(`Saved what ${appName(c.view.app)} may do.`, 'ok');
  }

  // ---------------------------------------------------------------- rendering

  function appName(app) {
    if (app && typeof app === 'object') return app.name || app.id || 'This app';
    return app || 'This app';
  }

  function render() {
    $('#loading').hidden = true;
    const loggedIn = !!state.me;
    const consentShown = loggedIn && !!state.consent;
    const handoffPending = !!state.handoff && !sessionFitsHandoff();

    $('#view-anon').hidden = loggedIn && !handoffPending;
    $('#view-user').hidden = !loggedIn || consentShown || !!state.handoff;
    $('#consent').hidden = !consentShown;

    const note = $('#handoff-note');
    if (state.handoff && !consentShown) {
      note.textContent = `An app (${state.handoff.app}) asks you to log in. After you log in you will see what it asks to do, and you can say no.`;
      note.hidden = false;
    } else {
      note.hidden = true;
    }

    if (!loggedIn || handoffPending) {
      const input = $('#user-id');
      if (!input.value) input.value = currentUser() || rememberedUser();
      $('#anon-heading').textContent = state.handoff ? 'Log in to continue' : 'Log in';
      $('#register-block').hidden = loggedIn;
    }
    if (loggedIn) {
      $('#current-user').textContent = currentUser() || '';
      $('#registered-note').hidden = !state.justRegistered;
    }
    if (consentShown) renderConsent();
  }

  function renderConsent() {
    const { mode, view } = state.consent;
    $('#consent-heading').textContent = `${appName(view.app)} asks to:`;
    const approved = new Set(Array.isArray(view.approved) ? view.approved : []);
    const list = $('#scopes');
    list.replaceChildren();
    for (const s of view.scopes || []) {
      const id = `scope-${s.id}`;
      const box = el('input', {
        type: 'checkbox', id, name: 'scope', value: s.id,
        checked: !!s.required || (mode === 'review' && !view.needs_consent && approved.has(s.id)),
        disabled: !!s.required,
      });
      box.setAttribute('aria-describedby', `${id}-desc`);
      list.append(el('li', { class: s.required ? 'scope required' : 'scope' },
        box,
        el('label', { htmlFor: id },
          el('span', { class: 'scope-name', text: s.name || s.id }),
          s.required ? el('span', { class: 'badge', text: 'required' }) : null),
        el('p', { id: `${id}-desc`, class: 'scope-desc', text: s.description || '' })));
    }
    if (!(view.scopes || []).length) list.append(el('li', { class: 'muted', text: 'Nothing beyond logging you in.' }));
    $('#approve').textContent = mode === 'handoff' ? 'Approve and continue' : 'Save';
    delete $('#approve').dataset.keepDisabled;
    const cancel = $('#cancel');
    cancel.textContent = 'Cancel';
    cancel.href = '/ui/';
  }

  async function renderAccount() {
    if (!state.me || state.handoff) return;
    const [pk, cs, dv, wl, sr, sec] = await Promise.all([
      api('GET', '/ui/api/passkeys'),
      api('GET', '/ui/api/consents'),
      api('GET', '/ui/api/devices'),
      api('GET', '/ui/api/wallets'),
      api('GET', '/ui/api/signing-requests'),
      api('GET', '/ui/api/security'),
    ]);
    renderPasskeys(Array.isArray(pk.passkeys) ? pk.passkeys : []);
    renderConsents(Array.isArray(cs.consents) ? cs.consents : []);
    renderDevices(Array.isArray(dv.devices) ? dv.devices : []);
    renderTransfers(Array.isArray(dv.transfers) ? dv.transfers : []);
    renderSecurity(sec);
    renderWallets(Array.isArray(wl.wallets) ? wl.wallets : []);
    renderSigningRequests(Array.isArray(sr.signing_requests) ? sr.signing_requests : []);
  }

  function renderWallets(wallets) {
    const list = $('#wallets');
    list.replaceChildren();
    for (const w of wallets) {
      list.append(el('li', { class: 'wallet', 'data-address': w.address },
        el('div', { class: 'row-main' },
          el('code', { text: w.address }),
          w.frozen ? el('span', { class: 'badge revoked-badge', text: 'frozen' }) : null,
          w.refresh_required ? el('span', { class: 'badge', text: 'refresh required' }) : null),
        el('dl', { class: 'facts' },
          el('dt', { text: 'Created' }), el('dd', {}, timeEl(w.created_at)),
          el('dt', { text: 'Key epoch' }), el('dd', { text: String(w.epoch) }))));
    }
    if (!wallets.length) list.append(el('li', { class: 'muted', text: 'No wallets yet.' }));
  }

  // Nano-units (1.0 = 1000000000) as a decimal, exactly.
  function nanoAmount(a) {
    if (!a || typeof a.scaled !== 'number') return '';
    const n = BigInt(a.scaled);
    const whole = n / 1000000000n;
    const frac = (n % 1000000000n).toString().padStart(9, '0').replace(/0+$/, '');
    return (a.saturated ? '≥ ' : '') + whole.toString() + (frac ? '.' + frac : '');
  }

  // What a request does, from the facts its decision saw: action, recipient, amount with symbol.
  function describe(facts, action) {
    const out = [];
    if (facts.token) {
      out.push(['Amount', `${nanoAmount(facts.token.amount)} ${facts.token.symbol || '(unknown token)'}`]);
      out.push([action === 'erc20_approve' || action === 'permit' ? 'Spender' : 'Recipient', facts.token.counterparty]);
    } else if (facts.value) {
      out.push(['Amount', `${nanoAmount(facts.value)} native`]);
      if (facts.to) out.push(['Recipient', facts.to]);
    } else if (facts.to) {
      out.push(['To', facts.to]);
    }
    if (facts.message) out.push(['Message', `${facts.message.len} bytes (${facts.message.encoding})`]);
    if (facts.typed_data) out.push(['Typed data', `${facts.typed_data.primary_type} for ${facts.typed_data.domain_name || facts.typed_data.verifying_contract || 'an unnamed domain'}`]);
    out.push(['Chain', String(facts.chain_id)]);
    return out;
  }

  function renderSigningRequests(requests) {
    const list = $('#signing-requests');
    list.replaceChildren();
    for (const r of requests) {
      const decision = r.decision || {};
      const facts = decision.facts || {};
      const reasons = (decision.determining_policies || []).map((p) => p.reason).join('; ');
      const dl = el('dl', { class: 'facts' });
      for (const [k, v] of describe(facts, r.action)) {
        dl.append(el('dt', { text: k }), el('dd', {}, el('code', { text: v })));
      }
      dl.append(el('dt', { text: 'Wallet' }), el('dd', {}, el('code', { text: r.wallet })));
      dl.append(el('dt', { text: 'Expires' }), el('dd', {}, timeEl(r.expires_at)));
      const row = el('li', { class: 'signing-request', 'data-request-id': r.id, 'data-state': r.state },
        el('div', { class: 'row-main' },
          el('strong', { text: (r.action || '').replace(/_/g, ' ') }), ' ',
          el('span', { class: 'badge', text: r.state === 'pending_step_up' ? 'needs your approval' : 'waiting for your device' })),
        dl);
      if (r.state === 'pending_step_up') {
        if (reasons) row.append(el('p', { class: 'hint', text: `Why: ${reasons}` }));
        const btn = el('button', { type: 'button', class: 'approve-request', 'data-request-id': r.id, text: 'Approve with passkey' });
        btn.addEventListener('click', () => action(async () => {
          const start = await api('POST', '/ui/api/signing-requests/step-up/start', { id: r.id });
          const cred = await getCredential(start.options);
          await api('POST', '/ui/api/signing-requests/step-up/finish', {
            id: r.id, ceremony_id: start.ceremony_id, credential: assertionJSON(cred),
          });
          setStatus('Approved: your device can now sign it.', 'ok');
          await renderAccount();
        }));
        row.append(btn);
      }
      list.append(row);
    }
    if (!requests.length) list.append(el('li', { class: 'muted', text: 'Nothing is waiting for you.' }));
  }

  function renderDevices(devices) {
    const list = $('#devices');
    list.replaceChildren();
    for (const d of devices) {
      const revoked = !!d.revoked_at;
      const row = el('li', { class: revoked ? 'device revoked' : 'device', 'data-device-id': d.device_id },
        el('div', { class: 'row-main' },
          el('strong', { text: d.name }), ' ', el('code', { class: 'muted', text: d.device_id }),
          revoked ? el('span', { class: 'badge revoked-badge', text: 'revoked' }) : null,
          !revoked && d.stale ? el('span', { class: 'badge revoked-badge device-stale', text: 'stale: run parapet device sync on a current device' }) : null),
        el('dl', { class: 'facts' },
          el('dt', { text: 'Paired' }), el('dd', {}, timeEl(d.created_at)),
          el('dt', { text: 'Last seen' }), el('dd', {}, timeEl(d.last_seen)),
          el('dt', { text: 'Wallets' }), el('dd', { text: (d.wallets || []).map((w) => `${w.address.slice(0, 10)}… epoch ${w.epoch}${w.current ? '' : ' (stale)'}`).join(', ') || 'none' })));
      if (!revoked) {
        const btn = el('button', { type: 'button', class: 'revoke-device secondary', 'data-device-id': d.device_id, text: 'Remove' });
        btn.setAttribute('aria-label', `Remove device ${d.name}`);
        btn.addEventListener('click', () => action(async () => {
          if (!window.confirm(`Remove ${d.name}? It will no longer be able to sign.`)) return;
          if (state.me && state.me.has_passkey) await stepUp('device_revoke', d.device_id);
          else await api('POST', '/ui/api/devices/revoke', { device_id: d.device_id });
          setStatus('Device removed.', 'ok');
          await renderAccount();
        }));
        row.append(btn);
      }
      list.append(row);
    }
    if (!devices.length) list.append(el('li', { class: 'muted', text: 'No devices yet.' }));
  }

  // A passkey step-up (user verification) bound to one security action, then the action.
  async function stepUp(action, id) {
    const start = await api('POST', '/ui/api/security/step-up/start', { action, id });
    const cred = await getCredential(start.options);
    return api('POST', '/ui/api/security/step-up/finish', {
      action, id, ceremony_id: start.ceremony_id, credential: assertionJSON(cred),
    });
  }

  function renderTransfers(transfers) {
    const list = $('#transfers');
    list.replaceChildren();
    for (const t of transfers) {
      const row = el('li', { class: 'transfer', 'data-transfer-id': t.id },
        el('div', { class: 'row-main' },
          el('span', { text: 'Code ' }), el('code', { class: 'short-code', text: t.short_code }),
          ' ', el('span', { class: 'muted', text: `device ${t.to_device}` })),
        el('dl', { class: 'facts' },
          el('dt', { text: 'Asked' }), el('dd', {}, timeEl(t.created_at)),
          el('dt', { text: 'Expires' }), el('dd', {}, timeEl(t.expires_at))));
      const btn = el('button', { type: 'button', class: 'approve-transfer', 'data-transfer-id': t.id, text: 'Approve with passkey' });
      btn.addEventListener('click', () => action(async () => {
        if (!window.confirm(`Does the new device show ${t.short_code}? Approve only if it does.`)) return;
        await stepUp('device_approve', t.id);
        setStatus('Approved: now run parapet device add --code ' + t.short_code + ' on a device that has your wallets.', 'ok');
        await renderAccount();
      }));
      row.append(btn);
      list.append(row);
    }
    if (!transfers.length) list.append(el('li', { class: 'muted', text: 'None.' }));
  }

  // A device asking to set the first recovery secret: whoever knows it can take the wallets over
  // after the waiting period, so it is approved with a passkey, for that device and that secret.
  function renderApprovals(approvals) {
    const list = $('#approvals');
    list.replaceChildren();
    for (const a of approvals) {
      const device = a.device_name || a.device_id;
      const row = el('li', { class: 'approval', 'data-operation-id': a.id },
        el('div', { class: 'row-main' },
          el('strong', { text: `"${device}" asks to set your recovery secret` })),
        el('dl', { class: 'facts' },
          el('dt', { text: 'Asked' }), el('dd', {}, timeEl(a.created_at)),
          el('dt', { text: 'Expires' }), el('dd', {}, timeEl(a.expires_at))));
      const btn = el('button', { type: 'button', class: 'approve-setup', 'data-operation-id': a.id, text: 'Approve with passkey' });
      btn.addEventListener('click', () => action(async () => {
        if (!window.confirm(`Did you just set up a recovery secret on "${device}"? Approve only if you did.`)) return;
        await stepUp('recovery_setup_approve', a.id);
        setStatus(`Approved: "${device}" now sets your recovery secret.`, 'ok');
        await renderAccount();
      }));
      row.append(btn);
      list.append(row);
    }
  }

  function renderSecurity(sec) {
    renderApprovals(Array.isArray(sec.approvals) ? sec.approvals : []);
    const recoveries = $('#recoveries');
    recoveries.replaceChildren();
    for (const r of (Array.isArray(sec.recoveries) ? sec.recoveries : [])) {
      const row = el('li', { class: 'recovery', 'data-recovery-id': r.id, 'data-state': r.state },
        el('div', { class: 'row-main' },
          el('strong', { text: `Recovery from "${r.device_name}"` }), ' ',
          el('span', { class: 'badge revoked-badge', text: r.state })),
        el('dl', { class: 'facts' },
          el('dt', { text: 'Opened' }), el('dd', {}, timeEl(r.opened_at)),
          el('dt', { text: 'Can complete from' }), el('dd', {}, timeEl(r.completable_at))));
      if (r.state === 'open') {
        const btn = el('button', { type: 'button', class: 'cancel-recovery', 'data-recovery-id': r.id, text: 'Cancel with passkey' });
        btn.addEventListener('click', () => action(async () => {
          await stepUp('recovery_cancel', r.id);
          setStatus('Recovery cancelled. Consider a new recovery secret if you did not start it.', 'ok');
          await renderAccount();
        }));
        row.append(btn);
      }
      recoveries.append(row);
    }
    if (!recoveries.children.length) recoveries.append(el('li', { class: 'muted', text: 'No recovery in the last week.' }));

    const kits = $('#kits');
    kits.replaceChildren();
    for (const k of (Array.isArray(sec.kits) ? sec.kits : [])) {
      const note = k.downloaded_epoch === null || k.downloaded_epoch === undefined
        ? 'Not downloaded from this page.'
        : k.stale
          ? `The kit you downloaded (epoch ${k.downloaded_epoch}) is stale: the wallet was refreshed to epoch ${k.epoch}. Download it again and destroy the old copy.`
          : `Downloaded for the current epoch (${k.epoch}).`;
      const row = el('li', { class: k.stale ? 'kit stale' : 'kit', 'data-address': k.address },
        el('div', { class: 'row-main' }, el('code', { text: k.address }),
          k.stale ? el('span', { class: 'badge revoked-badge kit-stale', text: 'stale kit' }) : null),
        el('p', { class: 'hint kit-note', text: note }));
      const btn = el('button', { type: 'button', class: 'download-kit secondary', 'data-address': k.address, text: 'Download kit (passkey)' });
      btn.addEventListener('click', () => action(async () => {
        const res = await stepUp('kit_download', k.address);
        const blob = new Blob([JSON.stringify(res.kit, null, 2)], { type: 'application/json' });
        const a = el('a', { href: URL.createObjectURL(blob), download: `parapet-kit-${k.address}-epoch-${res.kit.epoch}.json` });
        document.body.append(a);
        a.click();
        a.remove();
        setStatus(`Kit for epoch ${res.kit.epoch} downloaded.`, 'ok');
        await renderAccount();
      }));
      row.append(btn);
      kits.append(row);
    }
    if (!kits.children.length) kits.append(el('li', { class: 'muted', text: 'No wallets yet.' }));

    const active = !!(sec.totp && sec.totp.active);
    $('#totp-state').textContent = active
      ? 'An authenticator app is set up: a recovery needs its code as well as your secret.'
      : 'Optional: with an authenticator app, a recovery also needs a code from it.';
    $('#totp-enrol').hidden = active;
    $('#totp-remove').hidden = !active;
    if (active) $('#totp-setup').hidden = true;
  }

  async function enrolTotp() {
    const res = await stepUp('totp_enrol', '');
    $('#totp-qr').src = 'data:image/svg+xml;base64,' + btoa(res.qr_svg);
    $('#totp-uri').textContent = res.otpauth_uri;
    $('#totp-setup').hidden = false;
    $('#totp-code').focus();
  }

  async function removeTotp() {
    if (!window.confirm('Remove the authenticator app? A recovery will then need only your recovery secret.')) return;
    await stepUp('totp_remove', '');
    setStatus('Authenticator app removed.', 'ok');
    await renderAccount();
  }

  async function confirmTotp() {
    await api('POST', '/ui/api/totp/confirm', { code: $('#totp-code').value.trim() });
    $('#totp-setup').hidden = true;
    $('#totp-uri').textContent = '';
    setStatus('Authenticator app set up.', 'ok');
    await renderAccount();
  }

  async function pairDevice() {
    const res = state.me && state.me.has_passkey
      ? await stepUp('device_pair', '')
      : await api('POST', '/ui/api/devices/pair-code', {});
    $('#pairing-command').textContent = `parapet device pair --gateway ${window.location.origin} ${res.code}`;
    $('#pairing').hidden = false;
    setStatus('Pairing code made: it works once, for 10 minutes.', 'ok');
  }

  function renderPasskeys(passkeys) {
    const list = $('#passkeys');
    list.replaceChildren();
    const active = passkeys.filter((p) => !p.revoked_at).length;
    for (const p of passkeys) {
      const revoked = !!p.revoked_at;
      const flags = [];
      if (p.backup_eligible) flags.push(p.backup_state ? 'synced (backed up)' : 'can sync, not backed up yet');
      else flags.push('this device only');
      const row = el('li', { class: revoked ? 'passkey revoked' : 'passkey', 'data-credential-id': p.credential_id },
        el('div', { class: 'row-main' },
          el('code', { class: 'credential-id', title: p.credential_id, text: shortId(p.credential_id) }),
          revoked ? el('span', { class: 'badge revoked-badge', text: 'revoked' }) : null),
        el('dl', { class: 'facts' },
          el('dt', { text: 'Created' }), el('dd', {}, timeEl(p.created_at)),
          el('dt', { text: 'Last used' }), el('dd', {}, timeEl(p.last_used_at)),
          el('dt', { text: 'Backup' }), el('dd', { text: flags.join(', ') }),
          revoked ? el('dt', { text: 'Revoked' }) : null,
          revoked ? el('dd', {}, timeEl(p.revoked_at)) : null));
      if (!revoked) {
        const btn = el('button', {
          type: 'button', class: 'revoke secondary', 'data-credential-id': p.credential_id,
          text: 'Revoke',
        });
        btn.setAttribute('aria-label', `Revoke passkey ${shortId(p.credential_id)}`);
        btn.addEventListener('click', () => action(() => revokePasskey(p.credential_id, active <= 1)));
        row.append(btn);
      }
      list.append(row);
    }
    if (!passkeys.length) list.append(el('li', { class: 'muted', text: 'No passkeys.' }));
  }

  function renderConsents(consents) {
    const list = $('#consents');
    list.replaceChildren();
    for (const c of consents) {
      const id = idOf(c.app);
      const name = appName(c.app);
      const scopes = Array.isArray(c.approved) ? c.approved : [];
      const review = el('button', { type: 'button', class: 'review-consent', 'data-app': id, text: c.needs_consent ? 'Review (changed)' : 'Review' });
      review.addEventListener('click', () => action(() => reviewConsent(id)));
      const withdraw = el('button', { type: 'button', class: 'revoke-consent secondary', 'data-app': id, text: 'Withdraw' });
      withdraw.setAttribute('aria-label', `Withdraw consent for ${name}`);
      withdraw.addEventListener('click', () => action(() => withdrawConsent(id, name)));
      list.append(el('li', { class: 'consent-row', 'data-app': id },
        el('div', { class: 'row-main' },
          el('strong', { text: name }), ' ', el('code', { class: 'muted', text: id }),
          c.needs_consent ? el('span', { class: 'badge', text: 'asks for changes' }) : null),
        el('dl', { class: 'facts' },
          el('dt', { text: 'Allowed' }), el('dd', { text: scopes.length ? scopes.join(', ') : 'nothing' }),
          el('dt', { text: 'Since' }), el('dd', {}, timeEl(c.granted_at))),
        review, ' ', withdraw));
    }
    if (!consents.length) list.append(el('li', { class: 'muted', text: 'No apps yet.' }));
  }

  // ---------------------------------------------------------------- start

  function readHandoff() {
    const path = window.location.pathname.replace(/\/+$/, '');
    if (path !== '/ui/login') return null;
    const q = new URLSearchParams(window.location.search);
    const app = q.get('app');
    const redirectUri = q.get('redirect_uri');
    if (!app || !redirectUri) {
      state.linkError = 'This login link is incomplete (it needs app and redirect_uri). Go back to the app and try again.';
      return null;
    }
    return { app, redirect_uri: redirectUri, state: q.get('state') || '' };
  }

  // An app's one-time link (`/ui/?link=pc_…`, from POST /v1/sessions/page-link) opens the page
  // logged in as its user, for a person who has no passkey yet, to add one. The code leaves the
  // address bar at once, and is used only after the person says yes: a link opened by someone
  // else's hand must not log this browser into their account unasked.
  async function readLink() {
    const q = new URLSearchParams(window.location.search);
    const code = q.get('link');
    if (!code) return;
    q.delete('link');
    const rest = q.toString();
    window.history.replaceState(null, '', window.location.pathname + (rest ? `?${rest}` : ''));
    const who = await api('POST', '/ui/api/link/peek', { code });
    state.link = { code, name: String(who.name || who.user || ''), user: String(who.user || '') };
  }

  function renderLink() {
    const shown = !!state.link;
    $('#link-confirm').hidden = !shown;
    if (!shown) return;
    $('#view-anon').hidden = true;
    $('#view-user').hidden = true;
    $('#link-who').textContent = state.link.name;
    $('#link-who-button').textContent = state.link.name;
    // Someone else's link logs this browser into their account: say so when it is not the
    // account this browser knows.
    const known = rememberedUser();
    const warning = $('#link-warning');
    warning.hidden = !known || known === state.link.user;
    warning.textContent = warning.hidden ? ''
      : `This browser last logged in as ${known}, not as this link's account. If you did not ask for this link, say No.`;
  }

  async function acceptLink() {
    const link = state.link;
    state.link = null;
    renderLink();
    if (!link) return;
    const done = await api('POST', '/ui/api/link', { code: link.code });
    if (done.csrf) state.csrf = done.csrf;
    rememberUser(idOf(done.user));
    await loadMe();
    render();
    await renderAccount();
    setStatus('You are logged in. Add a passkey to log in with it next time.', 'ok');
  }

  function declineLink() {
    state.link = null;
    renderLink();
    render();
    setStatus('The link was not used.', 'ok');
  }

  async function start() {
    $('#login-form').addEventListener('submit', (ev) => { ev.preventDefault(); action(login); });
    $('#register').addEventListener('click', () => action(register));
    $('#add-passkey').addEventListener('click', () => action(addPasskey));
    $('#add-passkey-now').addEventListener('click', () => action(addPasskeyNow));
    $('#totp-remove').addEventListener('click', () => action(removeTotp));
    $('#link-accept').addEventListener('click', () => action(acceptLink));
    $('#link-decline').addEventListener('click', () => action(declineLink));
    $('#pair-device').addEventListener('click', () => action(pairDevice));
    $('#totp-enrol').addEventListener('click', () => action(enrolTotp));
    $('#totp-form').addEventListener('submit', (ev) => { ev.preventDefault(); action(confirmTotp); });
    $('#logout').addEventListener('click', () => action(logout));
    $('#consent-form').addEventListener('submit', (ev) => { ev.preventDefault(); action(approveConsent); });
    $('#cancel').addEventListener('click', (ev) => {
      if (state.consent && state.consent.mode === 'review') {
        ev.preventDefault();
        state.consent = null;
        render();
      }
    });

    state.handoff = readHandoff();
    $('#user-id').value = rememberedUser();

    await action(async () => {
      await readLink();
      await loadMe();
      if (state.me && state.handoff) {
        await continueHandoff();
      } else {
        render();
        await renderAccount();
      }
    });
    render();
    renderLink();
    if (state.linkError) setStatus(state.linkError, 'error');
    else if (!webauthnAvailable()) setStatus('This browser does not support passkeys.', 'error');
    document.body.dataset.ready = 'true';
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
