// The prescription tracker page: sign in with a bearer token, find a
// prescription by its ID or by the patient's NHS number, and read its status,
// items and history. Plain JavaScript, no framework and no build step. Every
// value from the server is put on the page as text (never as HTML).
'use strict';

(() => {
  // ---- What the server speaks -------------------------------------------

  const PATH_SESSION = '/tracker/session';
  const PATH_REQUEST_GROUP = '/FHIR/R4/RequestGroup';

  const URL_STATUS_HISTORY = 'https://fhir.nhs.uk/StructureDefinition/Extension-EPS-PrescriptionStatusHistory';
  const URL_REPEAT_INFO = 'https://fhir.nhs.uk/StructureDefinition/Extension-EPS-RepeatInformation';
  const URL_PENDING_CANCEL = 'https://fhir.nhs.uk/StructureDefinition/Extension-PendingCancellation';
  const URL_SEARCH_CATEGORY = 'https://github.com/nhs-eps/epsbroker/StructureDefinition/search-category';
  const URL_DISPENSING_INFO = 'https://fhir.nhs.uk/StructureDefinition/Extension-EPS-DispensingInformation';
  const URL_PRESCRIPTION_TYPE = 'https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionType';
  const URL_NON_DISPENSING_REASON = 'https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionNonDispensingReason';
  const URL_ISSUE_AVAILABLE_FROM = 'https://github.com/nhs-eps/epsbroker/StructureDefinition/issue-available-from';
  const SYSTEM_ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
  const SYSTEM_NHS_NUMBER = 'https://fhir.nhs.uk/Id/nhs-number';
  const SYSTEM_PRESCRIPTION_STATUS = 'https://fhir.nhs.uk/CodeSystem/EPS-task-business-status';

  // Prescription statuses (EPS-task-business-status) in the words EPS uses.
  const STATUS_TEXT = {
    '0000': 'Awaiting Release Ready',
    '0001': 'To Be Dispensed',
    '0002': 'With Dispenser',
    '0003': 'With Dispenser - Active',
    '0004': 'Expired',
    '0005': 'Cancelled',
    '0006': 'Dispensed',
    '0007': 'Not Dispensed',
    '0008': 'Claimed',
    '0009': 'No-Claimed',
    '9000': 'Repeat Dispense future instance',
    '9001': 'Prescription future instance',
    '9005': 'Cancelled future instance',
  };

  // Line item statuses (medicationdispense-type).
  const ITEM_STATUS_TEXT = {
    '0001': 'Item fully dispensed',
    '0002': 'Item not dispensed',
    '0003': 'Item dispensed - partial',
    '0004': 'Item not dispensed owing',
    '0005': 'Item cancelled',
    '0006': 'Expired',
    '0007': 'Item to be dispensed',
    '0008': 'Item with dispenser',
  };

  const CATEGORIES = [
    ['current', 'Current prescriptions'],
    ['future', 'Future prescriptions'],
    ['past', 'Past prescriptions'],
  ];

  // ---- Identifiers ------------------------------------------------------

  const MOD37_ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+';
  const PRESCRIPTION_ID = /^[A-F0-9]{6}-[A-Z0-9]{6}-[A-F0-9]{5}[A-Z0-9+]$/;

  // validNHSNumber reports whether n is 10 digits whose last digit is the
  // modulus 11 check digit of the first nine.
  function validNHSNumber(n) {
    if (!/^\d{10}$/.test(n)) return false;
    let sum = 0;
    for (let i = 0; i < 9; i++) sum += Number(n[i]) * (10 - i);
    let check = 11 - (sum % 11);
    if (check === 11) check = 0;
    return check !== 10 && check === Number(n[9]);
  }

  // validCheckCharacter reports whether the last character of a short
  // prescription ID (already matching PRESCRIPTION_ID) is the ISO 7064
  // MOD 37-2 check character of the other 17.
  function validCheckCharacter(id) {
    const chars = id.replace(/-/g, '');
    let t = 0;
    for (let i = 0; i < 17; i++) t = ((t + MOD37_ALPHABET.indexOf(chars[i])) * 2) % 37;
    return (t + MOD37_ALPHABET.indexOf(chars[17])) % 37 === 1;
  }

  // parseQuery reads what was typed into the search field: an NHS number
  // (10 digits, spaces allowed) or a short prescription ID (dashes optional).
  // It answers {kind, value} or {error} in words.
  function parseQuery(raw) {
    const s = String(raw).trim().toUpperCase();
    if (s === '') return { error: 'Enter a prescription ID or an NHS number.' };
    const digits = s.replace(/[\s-]/g, '');
    if (/^\d{10}$/.test(digits)) {
      if (!validNHSNumber(digits)) {
        return { error: `${formatNHSNumber(digits)} is not a valid NHS number: its last digit (the check digit) does not match the others. Check the number for typing errors.` };
      }
      return { kind: 'nhs', value: digits };
    }
    if (/^\d{1,17}$/.test(digits)) {
      return { error: `An NHS number has 10 digits; ${digits.length === 1 ? 'this has 1' : `this has ${digits.length}`}. A prescription ID looks like 24F5DA-A83008-7EFE6Z.` };
    }
    let id = s.replace(/\s+/g, '');
    if (/^[A-Z0-9+]{18}$/.test(id)) id = `${id.slice(0, 6)}-${id.slice(6, 12)}-${id.slice(12)}`;
    if (!PRESCRIPTION_ID.test(id)) {
      return { error: 'That is not a prescription ID or an NHS number. A prescription ID is 18 letters and numbers in three groups of six, like 24F5DA-A83008-7EFE6Z; an NHS number is 10 digits.' };
    }
    if (!validCheckCharacter(id)) {
      return { error: `${id} is not a valid prescription ID: its last character (the check character) does not match the others. Check the ID for typing errors.` };
    }
    return { kind: 'id', value: id };
  }

  // ---- Formatting -------------------------------------------------------

  const TZ = 'Europe/London';
  const dateFormat = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'short', year: 'numeric', timeZone: TZ });
  const dateTimeFormat = new Intl.DateTimeFormat('en-GB', {
    day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false, timeZone: TZ,
  });
  const timeFormat = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', hour12: false, timeZone: TZ });
  const birthDateFormat = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'short', year: 'numeric', timeZone: 'UTC' });

  function parseInstant(s) {
    if (typeof s !== 'string' || s === '') return null;
    const d = new Date(s);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  function formatDate(s) {
    const d = parseInstant(s);
    return d ? dateFormat.format(d) : (s || 'Not recorded');
  }

  function formatDateTime(s) {
    const d = parseInstant(s);
    return d ? dateTimeFormat.format(d) : (s || 'Time not recorded');
  }

  // formatBirthDate formats a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD) without
  // moving it across a time zone.
  function formatBirthDate(s) {
    if (typeof s !== 'string' || s === '') return 'Not recorded';
    const m = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$/.exec(s);
    if (!m) return s;
    if (!m[2]) return m[1];
    if (!m[3]) return new Intl.DateTimeFormat('en-GB', { month: 'short', year: 'numeric', timeZone: 'UTC' }).format(new Date(Date.UTC(+m[1], +m[2] - 1, 1)));
    return birthDateFormat.format(new Date(Date.UTC(+m[1], +m[2] - 1, +m[3])));
  }

  function formatNHSNumber(n) {
    return /^\d{10}$/.test(n) ? `${n.slice(0, 3)} ${n.slice(3, 6)} ${n.slice(6)}` : (n || 'Not recorded');
  }

  function formatHumanName(names) {
    if (!Array.isArray(names) || names.length === 0) return '';
    const n = names.find((x) => x && x.use === 'official') || names[0];
    if (!n) return '';
    if (n.text) return n.text;
    return [...(n.prefix || []), ...(n.given || []), n.family || '', ...(n.suffix || [])].filter(Boolean).join(' ');
  }

  function capitalise(s) {
    return s ? s.charAt(0).toUpperCase() + s.slice(1) : s;
  }

  // ---- Reading FHIR -----------------------------------------------------

  function extensions(res, url) {
    return ((res && res.extension) || []).filter((x) => x && x.url === url);
  }

  function extension(res, url) {
    return extensions(res, url)[0];
  }

  // subValue finds the value of a sub-extension named url in any of the
  // extensions given.
  function subValue(exts, url) {
    for (const x of exts) {
      for (const sub of (x && x.extension) || []) {
        if (sub && sub.url === url) {
          for (const k of Object.keys(sub)) if (k.startsWith('value')) return sub[k];
        }
      }
    }
    return undefined;
  }

  function codingText(coding, table) {
    if (!coding) return '';
    return (table && table[coding.code]) || coding.display || coding.code || '';
  }

  function identifierValue(ids, system) {
    const list = Array.isArray(ids) ? ids : (ids ? [ids] : []);
    const hit = list.find((i) => i && (!system || i.system === system));
    return hit ? hit.value || '' : '';
  }

  // index maps every entry of a Bundle by its fullUrl and ResourceType/id so
  // that references can be followed.
  function index(bundle) {
    const byRef = new Map();
    for (const e of (bundle && bundle.entry) || []) {
      const r = e && e.resource;
      if (!r) continue;
      if (e.fullUrl) byRef.set(e.fullUrl, r);
      if (r.id) {
        byRef.set(`${r.resourceType}/${r.id}`, r);
        byRef.set(`urn:uuid:${r.id}`, r);
      }
    }
    return {
      resolve(ref) {
        if (!ref || typeof ref.reference !== 'string') return null;
        return byRef.get(ref.reference) || byRef.get(ref.reference.replace(/^.*\/(\w+\/[^/]+)$/, '$1')) || null;
      },
      all(type) {
        return ((bundle && bundle.entry) || []).map((e) => e && e.resource).filter((r) => r && r.resourceType === type);
      },
    };
  }

  function matches(bundle, type) {
    return ((bundle && bundle.entry) || [])
      .filter((e) => e && e.resource && e.resource.resourceType === type && (!e.search || !e.search.mode || e.search.mode === 'match'))
      .map((e) => e.resource);
  }

  function prescriptionStatus(rg) {
    const hist = extensions(rg, URL_STATUS_HISTORY);
    const coding = subValue(hist, 'status');
    return { code: (coding && coding.code) || '', text: codingText(coding, STATUS_TEXT) || 'Unknown' };
  }

  // searchCategory is current, future or past: as the broker says, or, when
  // it does not, from the status.
  function searchCategory(rg) {
    const x = extension(rg, URL_SEARCH_CATEGORY);
    const v = x && typeof x.valueString === 'string' ? x.valueString.toLowerCase() : '';
    if (v === 'current' || v === 'future' || v === 'past') return v;
    const code = prescriptionStatus(rg).code;
    if (/^9/.test(code)) return 'future';
    if (['0004', '0005', '0006', '0007', '0008', '0009'].includes(code)) return 'past';
    return 'current';
  }

  function repeatInfo(rg) {
    const x = extensions(rg, URL_REPEAT_INFO);
    if (x.length === 0) return null;
    const issued = subValue(x, 'numberOfRepeatsIssued');
    const allowed = subValue(x, 'numberOfRepeatsAllowed');
    return { issued: Number.isInteger(issued) ? issued : null, allowed: Number.isInteger(allowed) ? allowed : null };
  }

  // therapyKind is 'erd' (electronic repeat dispensing), 'repeat' (repeat
  // prescribing) or 'acute', from the RequestGroup's intent and the items'
  // course of therapy.
  function therapyKind(rg, items) {
    const therapy = (items || [])
      .map((mr) => mr && mr.courseOfTherapyType && mr.courseOfTherapyType.coding && mr.courseOfTherapyType.coding[0] && mr.courseOfTherapyType.coding[0].code)
      .find(Boolean);
    const rep = repeatInfo(rg);
    const intent = rg && rg.intent;
    const erd = intent === 'reflex-order' || therapy === 'continuous-repeat-dispensing';
    const repeat = intent === 'instance-order' || therapy === 'continuous';
    if (erd || (!repeat && intent !== 'order' && therapy !== 'acute' && rep && rep.allowed > 1)) return 'erd';
    if (repeat) return 'repeat';
    return 'acute';
  }

  // erdIssue is {issue, issues} of an eRD RequestGroup that says which
  // issue it is (n of N); null otherwise.
  function erdIssue(rg, items) {
    if (therapyKind(rg, items) !== 'erd') return null;
    const rep = repeatInfo(rg);
    if (!rep || rep.issued == null || rep.allowed == null || rep.issued < 1) return null;
    return { issue: rep.issued, issues: rep.allowed };
  }

  // prescriptionType is "Acute", "Repeat" or "eRD n of N".
  function prescriptionType(rg, items) {
    const kind = therapyKind(rg, items);
    if (kind === 'erd') {
      const n = erdIssue(rg, items);
      return n ? `eRD ${n.issue} of ${n.issues}` : 'eRD';
    }
    if (kind === 'repeat') return 'Repeat';
    return 'Acute';
  }

  function pendingCancellation(res) {
    const x = extensions(res, URL_PENDING_CANCEL);
    const whole = subValue(x, 'prescriptionPendingCancellation') === true;
    const items = subValue(x, 'lineItemPendingCancellation') === true;
    if (whole) return 'Yes';
    if (items) return 'Yes, some items';
    return 'No';
  }

  function shortID(rg) {
    return identifierValue(rg && rg.identifier) || (rg && rg.id) || '';
  }

  // organisation describes an organisation reference or resource: its name
  // and ODS code, as far as they are known.
  function organisation(ref, idx) {
    if (!ref) return '';
    const res = idx && ref.reference ? idx.resolve(ref) : null;
    const ods = identifierValue(ref.identifier, SYSTEM_ODS) || identifierValue(ref.identifier) ||
      (res ? identifierValue(res.identifier, SYSTEM_ODS) || identifierValue(res.identifier) : '');
    const name = ref.display || (res && res.name) || '';
    if (name && ods) return `${name} (${ods})`;
    return name || ods;
  }

  // ---- Talking to the broker --------------------------------------------

  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function outcomeText(body) {
    if (!body || body.resourceType !== 'OperationOutcome' || !Array.isArray(body.issue)) return '';
    return body.issue
      .map((i) => (i && (i.diagnostics || (i.details && (i.details.text || (i.details.coding && i.details.coding[0] && i.details.coding[0].display))))) || '')
      .filter(Boolean)
      .join(' ');
  }

  async function call(method, path, body) {
    const init = {
      method,
      credentials: 'same-origin',
      cache: 'no-store',
      // The broker accepts the session cookie only with this header, which a
      // cross-site form or link cannot send.
      headers: { Accept: 'application/fhir+json, application/json', 'X-EPS-Tracker': '1' },
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    let text;
    try {
      res = await fetch(path, init);
      text = await res.text();
    } catch (err) {
      throw new APIError(0, 'The broker could not be reached. Check your network connection and try again.');
    }
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (err) { data = null; }
    }
    if (!res.ok) {
      const words = outcomeText(data) || `The broker answered ${res.status}${res.statusText ? ` ${res.statusText}` : ''}.`;
      throw new APIError(res.status, words);
    }
    return data;
  }

  // ---- Building the page ------------------------------------------------

  // h makes an element: h('p', {class: 'x'}, 'text', child, ...). Strings
  // become text nodes; attributes are set with setAttribute.
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v == null) continue;
      if (k === 'dataset') Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c == null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function facts(pairs, attrs) {
    return h('dl', Object.assign({ class: 'facts' }, attrs || {}),
      pairs.filter(Boolean).map(([term, value]) => h('div', { class: 'fact' }, h('dt', null, term), h('dd', null, value))));
  }

  const $ = (id) => document.getElementById(id);
  const el = {
    loading: $('loading'),
    message: $('message'),
    live: $('live'),
    session: $('session'),
    sessionUser: $('session-user'),
    sessionOds: $('session-ods'),
    sessionRole: $('session-role'),
    sessionExpires: $('session-expires'),
    signOut: $('sign-out'),
    signInView: $('sign-in-view'),
    signInForm: $('sign-in-form'),
    token: $('token'),
    tokenError: $('token-error'),
    signIn: $('sign-in'),
    appView: $('app-view'),
    searchForm: $('search-form'),
    query: $('query'),
    queryError: $('query-error'),
    search: $('search'),
    results: $('results'),
    detail: $('detail'),
  };

  // showMessage says something about the page as a whole: an error unless
  // kind is 'info'.
  function showMessage(text, kind) {
    el.message.textContent = text || '';
    el.message.classList.toggle('message-info', kind === 'info');
  }

  function announce(text) {
    // Clear first so that the same words said twice are announced twice.
    el.live.textContent = '';
    window.setTimeout(() => { el.live.textContent = text; }, 50);
  }

  function setFieldError(input, errorNode, text) {
    errorNode.textContent = text || '';
    if (text) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }

  // ---- Session ----------------------------------------------------------

  let session = null;
  let expiryTimer = 0;
  let generation = 0; // bumped on sign-in and sign-out: late answers are dropped
  let lastResults = null; // {query, bundle} of the search on screen
  let opener = null; // the results button that opened the detail

  function clearPatientData() {
    lastResults = null;
    opener = null;
    el.results.replaceChildren();
    el.results.hidden = true;
    el.detail.replaceChildren();
    el.detail.hidden = true;
    el.query.value = '';
    setFieldError(el.query, el.queryError, '');
  }

  // The broker ends a session after IDLE_MS without a request, and at the
  // latest when the token it was made from expires (session.expires). Each
  // request the page makes restarts the broker's idle timer, so the page
  // keeps the same clock: it notes when it last used the session, and when
  // the deadline passes it clears itself without asking the broker (asking
  // would restart the timer and keep an unattended session alive).
  const IDLE_MS = 15 * 60 * 1000;
  let lastUse = 0;

  function deadline() {
    const idle = lastUse + IDLE_MS;
    const hard = session ? parseInstant(session.expires) : null;
    // Within a minute of each other, idleness is the likelier reason to give.
    if (hard && hard.getTime() < idle - 60 * 1000) return { at: hard.getTime(), idle: false };
    if (hard && hard.getTime() < idle) return { at: hard.getTime(), idle: true };
    return { at: idle, idle: true };
  }

  function checkDeadline() {
    if (!session) return;
    const d = deadline();
    if (Date.now() < d.at) return;
    showSignedOut(d.idle
      ? 'You were signed out because the page was not used for 15 minutes. Sign in again to continue.'
      : 'You were signed out because your sign-in has expired. Sign in again with a new token to continue.');
  }

  // used notes that the session was used just now.
  function used() {
    if (!session) return;
    lastUse = Date.now();
    const d = deadline();
    el.sessionExpires.textContent = `${timeFormat.format(new Date(d.at))}${d.idle ? ' if idle' : ''}`;
    window.clearTimeout(expiryTimer);
    expiryTimer = window.setTimeout(checkDeadline, Math.max(d.at - Date.now(), 0) + 1000);
  }

  // Timers can be late in a background tab or after the computer slept.
  document.addEventListener('visibilitychange', checkDeadline);
  window.addEventListener('focus', checkDeadline);

  function showSignedIn(s) {
    session = s || {};
    el.loading.hidden = true;
    el.sessionUser.textContent = session.user || 'Unknown';
    el.sessionOds.textContent = session.ods || 'Unknown';
    el.sessionRole.textContent = capitalise(session.role || 'Unknown');
    el.session.hidden = false;
    el.signInView.hidden = true;
    el.appView.hidden = false;
    used();
  }

  function showSignedOut(why, kind) {
    generation++;
    session = null;
    window.clearTimeout(expiryTimer);
    clearPatientData();
    el.loading.hidden = true;
    el.session.hidden = true;
    el.appView.hidden = true;
    el.signInView.hidden = false;
    el.token.value = '';
    setFieldError(el.token, el.tokenError, '');
    showMessage(why || '', kind);
  }

  // failed says what went wrong with a call; a 401 means the session is over.
  function failed(err, doing) {
    if (err.status === 401) {
      showSignedOut(`Your session has ended, so ${doing} did not happen. Sign in again to continue. (${err.message})`);
      el.token.focus();
      return;
    }
    if (err.status) used(); // the broker answered: the session was used
    showMessage(`${capitalise(doing)} did not work: ${err.message}`);
  }

  async function start() {
    try {
      showSignedIn(await call('GET', PATH_SESSION));
    } catch (err) {
      if (err.status === 401) showSignedOut('');
      else showSignedOut(`Could not check whether you are signed in: ${err.message}`);
    }
  }

  // A token has no line breaks: Enter in the token box signs in.
  el.token.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      el.signInForm.requestSubmit();
    }
  });

  let signingIn = false;
  el.signInForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (signingIn) return;
    const token = el.token.value.replace(/\s+/g, '').replace(/^Bearer/i, '');
    if (token === '') {
      setFieldError(el.token, el.tokenError, 'Paste your access token to sign in.');
      el.token.focus();
      return;
    }
    if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token)) {
      setFieldError(el.token, el.tokenError, 'That is not an access token: a token is three groups of letters and numbers separated by dots. Paste the whole token.');
      el.token.focus();
      return;
    }
    setFieldError(el.token, el.tokenError, '');
    showMessage('');
    signingIn = true;
    el.signIn.setAttribute('aria-disabled', 'true');
    announce('Signing in…');
    try {
      await call('POST', PATH_SESSION, { token });
      el.token.value = '';
      const s = await call('GET', PATH_SESSION);
      generation++;
      clearPatientData();
      showSignedIn(s);
      announce(`Signed in as ${s.user || 'unknown user'}.`);
      el.query.focus();
    } catch (err) {
      setFieldError(el.token, el.tokenError, `Sign-in did not work: ${err.message}`);
      el.token.focus();
    } finally {
      signingIn = false;
      el.signIn.removeAttribute('aria-disabled');
    }
  });

  el.signOut.addEventListener('click', async () => {
    let why = 'You have signed out.';
    try {
      await call('DELETE', PATH_SESSION);
    } catch (err) {
      if (err.status !== 401) why = `Signing out may not have worked: ${err.message} Close the browser to be sure.`;
    }
    showSignedOut(why, why === 'You have signed out.' ? 'info' : 'error');
    el.token.focus();
  });

  // ---- Search -----------------------------------------------------------

  let searchSeq = 0;
  el.searchForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const q = parseQuery(el.query.value);
    if (q.error) {
      setFieldError(el.query, el.queryError, q.error);
      el.query.focus();
      return;
    }
    setFieldError(el.query, el.queryError, '');
    showMessage('');
    el.query.value = q.kind === 'nhs' ? formatNHSNumber(q.value) : q.value;
    const param = q.kind === 'nhs' ? 'nhsNumber' : 'prescriptionId';
    const seq = ++searchSeq;
    const gen = generation;
    el.results.setAttribute('aria-busy', 'true');
    announce('Searching…');
    try {
      const bundle = await call('GET', `${PATH_REQUEST_GROUP}?${param}=${encodeURIComponent(q.value)}`);
      if (seq !== searchSeq || gen !== generation) return;
      lastResults = { query: q, bundle };
      renderResults(q, bundle);
      el.detail.hidden = true;
      el.detail.replaceChildren();
      used();
    } catch (err) {
      if (seq !== searchSeq || gen !== generation) return;
      el.results.hidden = true;
      el.detail.hidden = true;
      failed(err, 'the search');
    } finally {
      if (seq === searchSeq) el.results.removeAttribute('aria-busy');
    }
  });

  function describeQuery(q) {
    return q.kind === 'nhs' ? `NHS number ${formatNHSNumber(q.value)}` : `prescription ID ${q.value}`;
  }

  function renderResults(q, bundle) {
    const idx = index(bundle);
    const groups = matches(bundle, 'RequestGroup');
    const total = typeof bundle.total === 'number' ? bundle.total : groups.length;
    const nodes = [h('h2', { id: 'results-heading', tabindex: '-1' }, `Results for ${describeQuery(q)}`)];

    if (total === 0 || groups.length === 0) {
      nodes.push(h('p', { class: 'nothing', id: 'nothing-found' }, `Nothing found: there are no prescriptions for ${describeQuery(q)}.`));
      el.results.replaceChildren(...nodes);
      el.results.hidden = false;
      announce(`Nothing found for ${describeQuery(q)}.`);
      return;
    }

    // The patients the prescriptions are for (usually one).
    const patients = [];
    for (const rg of groups) {
      const p = idx.resolve(rg.subject);
      if (p && !patients.includes(p)) patients.push(p);
    }
    if (patients.length === 0) patients.push(...idx.all('Patient'));
    for (const p of patients) {
      nodes.push(facts([
        ['Patient', formatHumanName(p.name) || 'Name not recorded'],
        ['NHS number', formatNHSNumber(identifierValue(p.identifier, SYSTEM_NHS_NUMBER) || identifierValue(p.identifier))],
        p.birthDate ? ['Date of birth', formatBirthDate(p.birthDate)] : null,
      ], { class: 'facts facts-inline' }));
    }

    const rows = groups.map((rg) => ({
      rg,
      id: shortID(rg),
      category: searchCategory(rg),
      status: prescriptionStatus(rg),
      type: prescriptionType(rg),
      issue: (repeatInfo(rg) || {}).issued || 0,
      erd: erdIssue(rg),
      authored: parseInstant(rg.authoredOn),
    }));
    rows.sort((a, b) => ((b.authored ? b.authored.getTime() : 0) - (a.authored ? a.authored.getTime() : 0)) || (a.issue - b.issue));

    const counts = [];
    for (const [cat, title] of CATEGORIES) {
      const mine = rows.filter((r) => r.category === cat);
      counts.push(`${mine.length} ${cat}`);
      const headingID = `results-${cat}-heading`;
      const section = h('section', { class: 'result-group', id: `results-${cat}`, 'aria-labelledby': headingID },
        h('h3', { id: headingID }, `${title} (${mine.length})`));
      if (mine.length === 0) {
        section.append(h('p', { class: 'none' }, `No ${cat} prescriptions.`));
      } else {
        section.append(h('table', { class: 'table results-table' },
          h('caption', { class: 'visually-hidden' }, `${title}: choose a prescription ID to see its details`),
          h('thead', null, h('tr', null,
            h('th', { scope: 'col', class: 'col-id' }, 'Prescription ID'),
            h('th', { scope: 'col', class: 'col-date' }, 'Issue date'),
            h('th', { scope: 'col', class: 'col-type' }, 'Type'),
            h('th', { scope: 'col', class: 'col-status' }, 'Status'),
            h('th', { scope: 'col', class: 'col-pending' }, 'Pending cancellation'))),
          h('tbody', null, mine.map((r) => h('tr', null,
            h('th', { scope: 'row' },
              h('button', {
                type: 'button',
                class: 'link-button',
                dataset: r.erd ? { id: r.id, issue: String(r.erd.issue) } : { id: r.id },
                'aria-label': `${r.id}, ${r.type}: view details`,
              }, r.id)),
            h('td', null, r.rg.authoredOn ? h('time', { datetime: r.rg.authoredOn }, formatDate(r.rg.authoredOn)) : 'Not recorded'),
            h('td', null, r.type),
            h('td', null, r.status.text),
            h('td', null, pendingCancellation(r.rg)))))));
      }
      nodes.push(section);
    }

    el.results.replaceChildren(...nodes);
    el.results.hidden = false;
    const n = rows.length;
    announce(`${n} ${n === 1 ? 'prescription' : 'prescriptions'} found for ${describeQuery(q)}: ${counts.join(', ')}.`);
  }

  el.results.addEventListener('click', (ev) => {
    const button = ev.target.closest('button[data-id]');
    if (button) openDetail(button.dataset.id, button, Number(button.dataset.issue) || 0);
  });

  // ---- Detail -----------------------------------------------------------

  // openDetail shows prescription id: issue n of an eRD prescription when
  // issue is n (its current issue when 0). from is the results button that
  // opened it (focus goes back there); focusID, when given, is the element
  // to focus afterwards if it is there and enabled (the issue buttons),
  // else the detail's heading.
  let detailSeq = 0;
  async function openDetail(id, from, issue, focusID) {
    const seq = ++detailSeq;
    const gen = generation;
    if (from !== undefined) opener = from || null;
    showMessage('');
    const what = issue ? `prescription ${id}, issue ${issue}` : `prescription ${id}`;
    announce(`Loading ${what}…`);
    el.detail.setAttribute('aria-busy', 'true');
    try {
      const query = issue ? `?issueNumber=${encodeURIComponent(String(issue))}` : '';
      const bundle = await call('GET', `${PATH_REQUEST_GROUP}/${encodeURIComponent(id)}${query}`);
      if (seq !== detailSeq || gen !== generation) return;
      renderDetail(id, bundle);
      el.results.hidden = true;
      el.detail.hidden = false;
      const target = (focusID && $(focusID) && !$(focusID).disabled && $(focusID)) || $('detail-heading');
      if (target) target.focus();
      used();
    } catch (err) {
      if (seq !== detailSeq || gen !== generation) return;
      failed(err, `opening ${what}`);
    } finally {
      if (seq === detailSeq) el.detail.removeAttribute('aria-busy');
    }
  }

  function backToResults() {
    el.detail.hidden = true;
    el.detail.replaceChildren();
    if (lastResults) {
      el.results.hidden = false;
      const again = opener && opener.isConnected ? opener : $('results-heading');
      if (again) again.focus();
    } else {
      el.query.focus();
    }
  }

  // participants reads who took part in a history event: organisations (by
  // ODS code) and users (anything else that names a person or role).
  function participants(action) {
    const orgs = [];
    const users = [];
    const add = (ref) => {
      if (!ref || typeof ref !== 'object') return;
      const ids = Array.isArray(ref.identifier) ? ref.identifier : (ref.identifier ? [ref.identifier] : []);
      const isOrg = ids.some((i) => i && i.system === SYSTEM_ODS) || /^Organization\//.test(ref.reference || '') || ref.type === 'Organization';
      const value = ids.map((i) => i && i.value).filter(Boolean).join(', ');
      const text = ref.display && value ? `${ref.display} (${value})` : (ref.display || value);
      if (!text) return;
      (isOrg ? orgs : users).push(text);
    };
    for (const p of (action && action.participant) || []) {
      if (!p) continue;
      for (const x of p.extension || []) {
        if (x && x.valueReference) add(x.valueReference);
        else if (x && typeof x.valueString === 'string' && x.valueString) users.push(x.valueString);
      }
      add(p.actor);
      add(p.typeReference);
    }
    return { orgs: [...new Set(orgs)], users: [...new Set(users)] };
  }

  function historyOf(rg) {
    const top = (rg && rg.action) || [];
    let events = null;
    const named = top.find((a) => a && /status transitions|history/i.test(a.title || ''));
    if (named) events = named.action || [];
    else events = top.flatMap((a) => ((a && a.action) || []).filter((x) => x && x.timingDateTime));
    return events
      .map((a, i) => ({ a, i, t: parseInstant(a.timingDateTime) }))
      .sort((x, y) => ((x.t ? x.t.getTime() : 0) - (y.t ? y.t.getTime() : 0)) || (x.i - y.i))
      .map((x) => x.a);
  }

  function itemsOf(rg, idx) {
    const top = (rg && rg.action) || [];
    const list = top.find((a) => a && /line items|medications/i.test(a.title || ''));
    const items = [];
    if (list) {
      for (const a of list.action || []) {
        const r = a && idx.resolve(a.resource);
        if (r && r.resourceType === 'MedicationRequest') items.push(r);
      }
    }
    return items.length ? items : idx.all('MedicationRequest');
  }

  function medicationText(mr) {
    const c = mr.medicationCodeableConcept;
    if (c) return c.text || (c.coding && c.coding[0] && (c.coding[0].display || c.coding[0].code)) || 'Medication not named';
    return (mr.medicationReference && mr.medicationReference.display) || 'Medication not named';
  }

  function quantityText(mr) {
    const q = mr.dispenseRequest && mr.dispenseRequest.quantity;
    if (!q || q.value == null) return '';
    return `${q.value}${q.unit ? ` ${q.unit}` : ''}`;
  }

  function renderDetail(id, bundle) {
    const idx = index(bundle);
    const rg = matches(bundle, 'RequestGroup')[0] || idx.all('RequestGroup')[0];
    if (!rg) throw new APIError(0, 'the broker’s answer held no prescription.');
    const items = itemsOf(rg, idx);
    const patient = idx.resolve(rg.subject) || idx.all('Patient')[0] || null;
    const status = prescriptionStatus(rg);
    const rxID = shortID(rg) || id;
    const first = items[0] || {};

    // Prescriber: the requester's practitioner role.
    const role = idx.resolve(first.requester);
    let prescriberName = '';
    let prescriberOrg = '';
    if (role) {
      if (role.resourceType === 'PractitionerRole') {
        const pr = role.practitioner ? idx.resolve(role.practitioner) : null;
        prescriberName = (pr && formatHumanName(pr.name)) || (role.practitioner && role.practitioner.display) || '';
        prescriberOrg = organisation(role.organization, idx);
      } else if (role.resourceType === 'Practitioner') {
        prescriberName = formatHumanName(role.name);
      }
    }
    if (!prescriberName && first.requester && first.requester.display) prescriberName = first.requester.display;
    if (!prescriberOrg) prescriberOrg = organisation(rg.author, idx);
    const prescriberKind = extension(rg, URL_PRESCRIPTION_TYPE);

    const nominated = items.map((mr) => mr.dispenseRequest && mr.dispenseRequest.performer).find(Boolean);
    const source = extension(rg, 'https://github.com/nhs-eps/epsbroker/StructureDefinition/nomination-source');
    const current = items.map((mr) => (Array.isArray(mr.performer) ? mr.performer[0] : mr.performer)).find(Boolean);

    const cancelReason = subValue(extensions(rg, URL_STATUS_HISTORY), 'cancellationReason');
    const nonDispensing = extension(rg, URL_NON_DISPENSING_REASON);
    const erd = erdIssue(rg, items);
    const availableFrom = extension(rg, URL_ISSUE_AVAILABLE_FROM);

    const summary = h('section', { class: 'card', 'aria-labelledby': 'detail-prescription-heading' },
      h('h3', { id: 'detail-prescription-heading' }, 'Prescription'),
      facts([
        ['Status', [h('span', { id: 'status', class: 'status' }, status.text), status.code ? h('span', { class: 'code' }, ` (${status.code})`) : null]],
        ['Type', h('span', { id: 'type' }, prescriptionType(rg, items))],
        erd ? ['Issue', h('span', { id: 'issue' }, `${erd.issue} of ${erd.issues}`)] : null,
        ['Issue date', rg.authoredOn ? h('time', { datetime: rg.authoredOn }, formatDate(rg.authoredOn)) : 'Not recorded'],
        availableFrom && availableFrom.valueDateTime
          ? ['Available from', h('time', { id: 'available-from', datetime: availableFrom.valueDateTime }, formatDate(availableFrom.valueDateTime))]
          : null,
        ['Pending cancellation', pendingCancellation(rg)],
        cancelReason ? ['Cancellation reason', codingText(cancelReason)] : null,
        nonDispensing && nonDispensing.valueCoding ? ['Reason not dispensed', codingText(nonDispensing.valueCoding)] : null,
      ]));

    const patientCard = h('section', { class: 'card', id: 'patient', 'aria-labelledby': 'detail-patient-heading' },
      h('h3', { id: 'detail-patient-heading' }, 'Patient'),
      patient ? facts([
        ['Name', formatHumanName(patient.name) || 'Not recorded'],
        ['NHS number', formatNHSNumber(identifierValue(patient.identifier, SYSTEM_NHS_NUMBER) || identifierValue(patient.identifier))],
        ['Date of birth', formatBirthDate(patient.birthDate)],
      ]) : h('p', null, 'The patient is not recorded.'));

    const orgCard = h('section', { class: 'card', id: 'organisations', 'aria-labelledby': 'detail-orgs-heading' },
      h('h3', { id: 'detail-orgs-heading' }, 'Prescriber and dispensers'),
      facts([
        ['Prescriber', prescriberName || 'Name not recorded'],
        ['Prescriber organisation', prescriberOrg || 'Not recorded'],
        prescriberKind && prescriberKind.valueCoding ? ['Prescriber type', codingText(prescriberKind.valueCoding)] : null,
        ['Nominated dispenser', nominated
          ? `${organisation(nominated, idx) || 'Not recorded'}${source && source.valueString === 'registry' ? " (the patient's nomination)" : source && source.valueString === 'order' ? ' (named on the prescription)' : ''}`
          : (source && source.valueString === 'none' ? 'None found (no nomination on record)' : 'None (not nominated)')],
        ['Current dispenser', current ? organisation(current, idx) || 'Not recorded' : 'None (not with a dispenser)'],
      ]));

    const itemsSection = h('section', { class: 'block', id: 'items', 'aria-labelledby': 'detail-items-heading' },
      h('h3', { id: 'detail-items-heading' }, `Items (${items.length})`),
      items.length === 0 ? h('p', null, 'No items are recorded.') : h('table', { class: 'table' },
        h('caption', { class: 'visually-hidden' }, 'Items on the prescription and their statuses'),
        h('thead', null, h('tr', null,
          h('th', { scope: 'col' }, 'Medication'),
          h('th', { scope: 'col' }, 'Quantity'),
          h('th', { scope: 'col' }, 'Dosage'),
          h('th', { scope: 'col' }, 'Item status'),
          h('th', { scope: 'col' }, 'Pending cancellation'))),
        h('tbody', null, items.map((mr) => {
          const info = subValue(extensions(mr, URL_DISPENSING_INFO), 'dispenseStatus');
          const reason = mr.statusReason && mr.statusReason.coding && mr.statusReason.coding[0];
          return h('tr', null,
            h('th', { scope: 'row' }, medicationText(mr)),
            h('td', null, quantityText(mr) || 'Not recorded'),
            h('td', null, (mr.dosageInstruction || []).map((d) => d && d.text).filter(Boolean).join('; ') || 'Not recorded'),
            h('td', null, codingText(info, ITEM_STATUS_TEXT) || 'Unknown', reason ? h('span', { class: 'reason' }, ` – ${codingText(reason)}`) : null),
            h('td', null, pendingCancellation(mr)));
        }))));

    const history = historyOf(rg);
    const timeline = h('ol', { id: 'timeline', class: 'timeline' }, history.map((a) => {
      const who = participants(a);
      const statusCoding = ((a.code || []).flatMap((c) => (c && c.coding) || [])).find((c) => c && c.system === SYSTEM_PRESCRIPTION_STATUS);
      const title = a.title || (statusCoding ? codingText(statusCoding, STATUS_TEXT) : 'Event');
      return h('li', { class: 'event' },
        h('p', { class: 'event-time' }, a.timingDateTime ? h('time', { datetime: a.timingDateTime }, formatDateTime(a.timingDateTime)) : 'Time not recorded'),
        h('div', { class: 'event-body' },
          h('p', { class: 'event-title' }, title),
          facts([
            statusCoding ? ['Status after', codingText(statusCoding, STATUS_TEXT)] : null,
            ['Organisation', who.orgs.join(', ') || 'Not recorded'],
            ['User', who.users.join(', ') || 'Not recorded'],
          ], { class: 'facts facts-inline' })));
    }));
    const historySection = h('section', { class: 'block', id: 'history', 'aria-labelledby': 'detail-history-heading' },
      h('h3', { id: 'detail-history-heading' }, 'History'),
      history.length === 0 ? h('p', null, 'No history is recorded.') : null,
      timeline);

    const back = h('button', { type: 'button', class: 'button button-secondary', id: 'back' }, lastResults ? 'Back to results' : 'Back to search');
    back.addEventListener('click', backToResults);

    // An eRD prescription: one issue at a time, stepped through in order.
    let issueNav = null;
    if (erd) {
      const step = (n, buttonID) => () => openDetail(rxID, undefined, n, buttonID);
      const prev = h('button', {
        type: 'button', class: 'button button-secondary', id: 'issue-previous', disabled: erd.issue <= 1,
        'aria-label': erd.issue > 1 ? `Previous issue: issue ${erd.issue - 1} of ${erd.issues}` : 'Previous issue (this is the first)',
      }, 'Previous issue');
      const next = h('button', {
        type: 'button', class: 'button button-secondary', id: 'issue-next', disabled: erd.issue >= erd.issues,
        'aria-label': erd.issue < erd.issues ? `Next issue: issue ${erd.issue + 1} of ${erd.issues}` : 'Next issue (this is the last)',
      }, 'Next issue');
      if (erd.issue > 1) prev.addEventListener('click', step(erd.issue - 1, 'issue-previous'));
      if (erd.issue < erd.issues) next.addEventListener('click', step(erd.issue + 1, 'issue-next'));
      issueNav = h('nav', { class: 'issue-nav', 'aria-label': 'Issues of this repeat dispensing prescription' },
        prev,
        h('p', { class: 'issue-label', id: 'issue-label' },
          `Issue ${erd.issue} of ${erd.issues}`,
          h('span', { class: 'issue-status', id: 'issue-status' }, `: ${status.text}`)),
        next);
    }

    el.detail.replaceChildren(...[
      h('div', { class: 'detail-head' },
        h('h2', { id: 'detail-heading', tabindex: '-1' }, erd ? `Prescription ${rxID}, issue ${erd.issue} of ${erd.issues}` : `Prescription ${rxID}`),
        back),
      issueNav,
      h('div', { class: 'cards' }, summary, patientCard, orgCard),
      itemsSection,
      historySection].filter(Boolean));
    announce(erd ? `Prescription ${rxID}, issue ${erd.issue} of ${erd.issues}: ${status.text}.` : `Prescription ${rxID}: ${status.text}.`);
  }

  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !el.detail.hidden) {
      ev.preventDefault();
      backToResults();
    }
  });

  // Expose the pure helpers for tests in a browser console; the page does
  // not need them there.
  window.epsTracker = Object.freeze({ parseQuery, validNHSNumber, validCheckCharacter });

  start();
})();
