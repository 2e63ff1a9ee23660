// The Todo page: plain JavaScript, no framework, no build step.
//
// It talks to the service the way a Next.js front end would:
//   1. Better Auth at /api/auth/* with its session cookie (sign up, sign in, sign out);
//   2. a short-lived JWT from GET /api/auth/token, sent as `Authorization: Bearer` to
//      /api/{user_id}/tasks, fetched again once when the API answers 401.
// Everything the user typed is rendered with textContent / DOM APIs, never as HTML.

const AUTH = '/api/auth';
/** Refresh the JWT this long before it expires, so a request never leaves with a stale one. */
const TOKEN_MARGIN_MS = 30_000;

/** The session is gone (signed out elsewhere, expired): the user has to sign in again. */
class SessionEndedError extends Error {}

/** The API answered with an error; `issues` holds the 422 `detail` list when there is one. */
class ApiError extends Error {
  constructor(status, message, issues = []) {
    super(message);
    this.status = status;
    this.issues = issues;
  }
}

const state = {
  /** Better Auth's user object from the session, or null when signed out. */
  user: null,
  token: null,
  /** Local clock time (ms) after which the token is refreshed before use. */
  tokenRefreshAt: 0,
  /** The JWT's `sub`: the `{user_id}` of every tasks URL. */
  userId: null,
  status: 'all',
  sort: 'created',
  tasks: [],
  total: 0,
  /** Id of the task whose edit form is open. */
  editingId: null,
  /** Only the newest list request may render (filters can change while one is in flight). */
  loadSequence: 0,
};

const $ = (id) => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`missing #${id}`);
  return element;
};

const view = {
  loading: $('loading'),
  auth: $('auth-view'),
  authHeading: $('auth-heading'),
  authNotice: $('auth-notice'),
  signInForm: $('sign-in-form'),
  signInError: $('sign-in-error'),
  signUpForm: $('sign-up-form'),
  signUpError: $('sign-up-error'),
  account: $('account'),
  accountName: $('account-name'),
  signOut: $('sign-out'),
  tasks: $('tasks-view'),
  newTaskForm: $('new-task-form'),
  newTitle: $('new-title'),
  newTitleError: $('new-title-error'),
  newDescription: $('new-description'),
  newDescriptionError: $('new-description-error'),
  newTaskError: $('new-task-error'),
  list: $('task-list'),
  listError: $('list-error'),
  count: $('task-count'),
  empty: $('empty'),
  sort: $('sort'),
  status: $('status'),
};

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

// ---------------------------------------------------------------------------------------------
// HTTP

async function readJson(response) {
  const text = await response.text();
  if (text === '') return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** The human sentence in an error body: Better Auth's `message` or our API's `detail`. */
function messageOf(body, fallback) {
  if (body && typeof body === 'object') {
    if (typeof body.message === 'string' && body.message !== '') return body.message;
    if (typeof body.detail === 'string' && body.detail !== '') return body.detail;
    if (Array.isArray(body.detail)) {
      const messages = body.detail.map((issue) => issue?.msg).filter(Boolean);
      if (messages.length > 0) return messages.join(' ');
    }
  }
  return fallback;
}

async function send(url, { method = 'GET', body, headers = {} } = {}) {
  const init = {
    method,
    credentials: 'same-origin',
    headers: { Accept: 'application/json', ...headers },
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(url, init);
  } catch {
    throw new ApiError(0, 'Cannot reach the server. Check your connection and try again.');
  }
}

/** A Better Auth endpoint, authenticated by the session cookie. */
async function authCall(path, options) {
  const response = await send(`${AUTH}${path}`, options);
  return { response, body: await readJson(response) };
}

function decodeJwtPayload(token) {
  const part = token.split('.')[1] ?? '';
  const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
  const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
  try {
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

async function fetchToken() {
  const { response, body } = await authCall('/token');
  if (response.status === 401 || response.status === 403) {
    throw new SessionEndedError('Your session has ended. Please sign in again.');
  }
  if (!response.ok || typeof body?.token !== 'string') {
    throw new ApiError(response.status, messageOf(body, 'Could not get an access token.'));
  }
  const claims = decodeJwtPayload(body.token);
  // Lifetime from the token's own iat/exp, so a wrong clock here does not matter.
  const lifetimeMs =
    typeof claims.exp === 'number' && typeof claims.iat === 'number'
      ? (claims.exp - claims.iat) * 1000
      : 5 * 60_000;
  state.token = body.token;
  state.tokenRefreshAt = Date.now() + Math.max(lifetimeMs - TOKEN_MARGIN_MS, 0);
  state.userId = typeof claims.sub === 'string' && claims.sub !== '' ? claims.sub : state.user?.id;
  return body.token;
}

let pendingToken = null;

/** One token request at a time, however many API calls are waiting for it. */
function refreshToken() {
  pendingToken ??= fetchToken().finally(() => {
    pendingToken = null;
  });
  return pendingToken;
}

async function currentToken() {
  if (state.token === null || Date.now() >= state.tokenRefreshAt) return refreshToken();
  return state.token;
}

/** A tasks API call with the bearer JWT; on 401 the token is fetched again once and retried. */
async function api(path, options = {}) {
  if (state.user === null) throw new SessionEndedError('Please sign in.');
  const url = () => `/api/${encodeURIComponent(state.userId ?? '')}/tasks${path}`;
  const attempt = (token) =>
    send(url(), { ...options, headers: { Authorization: `Bearer ${token}` } });

  let response = await attempt(await currentToken());
  if (response.status === 401) {
    response = await attempt(await refreshToken());
  }
  const body = await readJson(response);
  if (response.status === 401) {
    throw new SessionEndedError(
      `The server did not accept your sign-in (${messageOf(body, 'unauthorized')}). Please sign in again.`,
    );
  }
  if (!response.ok) {
    const issues = response.status === 422 && Array.isArray(body?.detail) ? body.detail : [];
    throw new ApiError(
      response.status,
      messageOf(body, `Request failed (${response.status}).`),
      issues,
    );
  }
  return { response, body };
}

// ---------------------------------------------------------------------------------------------
// Small view helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'className') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, '');
    else node.setAttribute(key, String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

let statusTimer;
function announce(message) {
  view.status.textContent = message;
  view.status.classList.add('visible');
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => view.status.classList.remove('visible'), 2500);
}

function setBusy(form, busy) {
  for (const button of form.querySelectorAll('button')) button.disabled = busy;
  form.setAttribute('aria-busy', String(busy));
}

function clearErrors(form) {
  for (const node of form.querySelectorAll('.field-error, .form-error')) node.textContent = '';
  for (const node of form.querySelectorAll('[aria-invalid]')) node.removeAttribute('aria-invalid');
}

/**
 * Puts each 422 issue next to its field (`loc: ["body", "title"]` → the title input's error);
 * issues about no known field go to the form's own error line.
 */
function showErrors(error, fields, formError) {
  const general = [];
  if (error instanceof ApiError && error.issues.length > 0) {
    for (const issue of error.issues) {
      const name = Array.isArray(issue?.loc) && issue.loc[0] === 'body' ? issue.loc[1] : undefined;
      const field = typeof name === 'string' ? fields[name] : undefined;
      if (field) {
        field.error.textContent = [field.error.textContent, issue.msg].filter(Boolean).join(' ');
        field.input.setAttribute('aria-invalid', 'true');
      } else {
        general.push(issue?.msg ?? 'Invalid value.');
      }
    }
  } else {
    general.push(error instanceof Error ? error.message : String(error));
  }
  formError.textContent = general.join(' ');
  const firstInvalid = Object.values(fields).find(
    (field) => field.input.getAttribute('aria-invalid') === 'true',
  );
  firstInvalid?.input.focus();
}

// ---------------------------------------------------------------------------------------------
// Screens

function showLoading() {
  view.loading.hidden = false;
  view.auth.hidden = true;
  view.tasks.hidden = true;
  view.account.hidden = true;
}

function showAuth(mode = 'sign-in', notice = '') {
  view.loading.hidden = true;
  view.tasks.hidden = true;
  view.account.hidden = true;
  view.auth.hidden = false;
  const signIn = mode === 'sign-in';
  view.signInForm.hidden = !signIn;
  view.signUpForm.hidden = signIn;
  view.authHeading.textContent = signIn ? 'Sign in' : 'Create an account';
  view.authNotice.textContent = notice;
  view.authNotice.hidden = notice === '';
  clearErrors(view.signInForm);
  clearErrors(view.signUpForm);
  const form = signIn ? view.signInForm : view.signUpForm;
  form.querySelector('input')?.focus();
}

function forgetSession() {
  state.user = null;
  state.token = null;
  state.tokenRefreshAt = 0;
  state.userId = null;
  state.tasks = [];
  state.total = 0;
  state.editingId = null;
  state.loadSequence++;
  view.list.replaceChildren();
  view.accountName.textContent = '';
  view.status.textContent = '';
  view.status.classList.remove('visible');
}

/** Any failure that means "signed out" lands here; everything else is shown where it happened. */
function handleFailure(error, show) {
  if (error instanceof SessionEndedError) {
    forgetSession();
    showAuth('sign-in', error.message);
    return;
  }
  show(error);
}

async function enterApp(user) {
  state.user = user;
  try {
    await refreshToken();
  } catch (error) {
    forgetSession();
    throw error;
  }
  view.loading.hidden = true;
  view.auth.hidden = true;
  view.tasks.hidden = false;
  view.account.hidden = false;
  view.accountName.textContent = user.name ? `${user.name} (${user.email})` : user.email;
  view.signInForm.reset();
  view.signUpForm.reset();
  view.newTitle.focus();
  await loadTasks();
}

// ---------------------------------------------------------------------------------------------
// Tasks

async function loadTasks() {
  const sequence = ++state.loadSequence;
  view.list.setAttribute('aria-busy', 'true');
  try {
    const query = new URLSearchParams({ status: state.status, sort: state.sort });
    const { response, body } = await api(`?${query}`);
    if (sequence !== state.loadSequence) return;
    state.tasks = Array.isArray(body) ? body : [];
    const total = Number(response.headers.get('X-Total-Count'));
    state.total = Number.isFinite(total) && total > 0 ? total : state.tasks.length;
    view.listError.textContent = '';
    renderTasks();
  } catch (error) {
    if (sequence !== state.loadSequence) return;
    handleFailure(error, (failure) => {
      view.listError.textContent = failure.message;
    });
  } finally {
    if (sequence === state.loadSequence) view.list.removeAttribute('aria-busy');
  }
}

function renderTasks() {
  const items = state.tasks.map((task) =>
    task.id === state.editingId ? editItem(task) : taskItem(task),
  );
  view.list.replaceChildren(...items);

  const noun = state.total === 1 ? 'task' : 'tasks';
  const shown =
    state.tasks.length < state.total ? `${state.tasks.length} of ${state.total}` : state.total;
  view.count.textContent = state.status === 'all' ? `${shown} ${noun}` : `${shown} ${state.status}`;

  view.empty.hidden = state.tasks.length > 0;
  view.empty.textContent =
    state.status === 'all'
      ? 'No tasks yet. Add your first one above.'
      : `No ${state.status} tasks.`;
}

function taskItem(task) {
  const checkboxId = `task-${task.id}-done`;
  const created = new Date(task.created_at);
  const checkbox = el('input', {
    type: 'checkbox',
    id: checkboxId,
    className: 'task-check',
    'aria-label': `Completed: ${task.title}`,
    onchange: () => toggleTask(task, checkbox),
  });
  checkbox.checked = task.completed;

  return el(
    'li',
    { className: task.completed ? 'task done' : 'task', 'data-task-id': task.id },
    checkbox,
    el(
      'div',
      { className: 'task-body' },
      el('p', { className: 'task-title', text: task.title }),
      task.description ? el('p', { className: 'task-description', text: task.description }) : null,
      el(
        'p',
        { className: 'task-meta' },
        el('time', { datetime: task.created_at, text: `Added ${dateFormat.format(created)}` }),
        task.completed ? el('span', { className: 'badge', text: 'Done' }) : null,
      ),
    ),
    el(
      'div',
      { className: 'task-actions' },
      el('button', {
        type: 'button',
        className: 'button secondary small',
        text: 'Edit',
        'aria-label': `Edit “${task.title}”`,
        onclick: () => startEdit(task),
      }),
      el('button', {
        type: 'button',
        className: 'button danger small',
        text: 'Delete',
        'aria-label': `Delete “${task.title}”`,
        onclick: () => deleteTask(task),
      }),
    ),
  );
}

function editItem(task) {
  const prefix = `edit-${task.id}`;
  const title = el('input', {
    id: `${prefix}-title`,
    name: 'title',
    type: 'text',
    maxlength: 200,
    autocomplete: 'off',
    required: true,
    'aria-describedby': `${prefix}-title-error`,
  });
  title.value = task.title;
  const description = el('textarea', {
    id: `${prefix}-description`,
    name: 'description',
    rows: 3,
    maxlength: 1000,
    'aria-describedby': `${prefix}-description-error`,
  });
  description.value = task.description ?? '';
  const titleError = el('p', { className: 'field-error', id: `${prefix}-title-error` });
  const descriptionError = el('p', { className: 'field-error', id: `${prefix}-description-error` });
  const formError = el('p', { className: 'form-error', role: 'alert' });

  const form = el(
    'form',
    { className: 'edit-form', novalidate: true, 'aria-label': `Edit “${task.title}”` },
    el(
      'div',
      { className: 'field' },
      el('label', { for: title.id, text: 'Title' }),
      title,
      titleError,
    ),
    el(
      'div',
      { className: 'field' },
      el('label', { for: description.id, text: 'Description' }),
      description,
      descriptionError,
    ),
    formError,
    el(
      'div',
      { className: 'edit-actions' },
      el('button', { type: 'submit', className: 'button primary small', text: 'Save' }),
      el('button', {
        type: 'button',
        className: 'button secondary small',
        text: 'Cancel',
        onclick: () => {
          state.editingId = null;
          renderTasks();
          focusTask(task.id);
        },
      }),
    ),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    setBusy(form, true);
    try {
      const text = description.value;
      await api(`/${task.id}`, {
        method: 'PUT',
        body: { title: title.value, description: text.trim() === '' ? null : text },
      });
      state.editingId = null;
      announce('Task saved');
      await loadTasks();
      focusTask(task.id);
    } catch (error) {
      handleFailure(error, (failure) =>
        showErrors(
          failure,
          {
            title: { input: title, error: titleError },
            description: { input: description, error: descriptionError },
          },
          formError,
        ),
      );
    } finally {
      setBusy(form, false);
    }
  });
  form.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      state.editingId = null;
      renderTasks();
      focusTask(task.id);
    }
  });

  return el('li', { className: 'task editing', 'data-task-id': task.id }, form);
}

function focusTask(id) {
  const item = view.list.querySelector(`[data-task-id="${CSS.escape(String(id))}"]`);
  item?.querySelector('button, input')?.focus();
}

function startEdit(task) {
  state.editingId = task.id;
  renderTasks();
  document.getElementById(`edit-${task.id}-title`)?.focus();
}

async function toggleTask(task, checkbox) {
  const completed = checkbox.checked;
  checkbox.disabled = true;
  try {
    await api(`/${task.id}/complete`, { method: 'PATCH', body: { completed } });
    announce(completed ? 'Marked as done' : 'Marked as not done');
    await loadTasks();
  } catch (error) {
    checkbox.checked = !completed;
    handleFailure(error, (failure) => {
      view.listError.textContent = failure.message;
    });
  } finally {
    checkbox.disabled = false;
  }
}

async function deleteTask(task) {
  if (!window.confirm(`Delete “${task.title}”?`)) return;
  try {
    await api(`/${task.id}`, { method: 'DELETE' });
    if (state.editingId === task.id) state.editingId = null;
    announce('Task deleted');
    await loadTasks();
    view.newTitle.focus();
  } catch (error) {
    handleFailure(error, (failure) => {
      view.listError.textContent = failure.message;
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Event wiring

view.newTaskForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = view.newTaskForm;
  clearErrors(form);
  setBusy(form, true);
  try {
    const description = view.newDescription.value;
    await api('', {
      method: 'POST',
      body: {
        title: view.newTitle.value,
        ...(description.trim() === '' ? {} : { description }),
      },
    });
    form.reset();
    announce('Task added');
    await loadTasks();
    view.newTitle.focus();
  } catch (error) {
    handleFailure(error, (failure) =>
      showErrors(
        failure,
        {
          title: { input: view.newTitle, error: view.newTitleError },
          description: { input: view.newDescription, error: view.newDescriptionError },
        },
        view.newTaskError,
      ),
    );
  } finally {
    setBusy(form, false);
  }
});

for (const radio of document.querySelectorAll('input[name="status"]')) {
  radio.addEventListener('change', () => {
    if (!radio.checked) return;
    state.status = radio.value;
    loadTasks();
  });
}

view.sort.addEventListener('change', () => {
  state.sort = view.sort.value;
  loadTasks();
});

$('show-sign-up').addEventListener('click', () => showAuth('sign-up'));
$('show-sign-in').addEventListener('click', () => showAuth('sign-in'));

async function submitAuth(form, errorLine, path, body, failureMessage) {
  clearErrors(form);
  setBusy(form, true);
  try {
    const { response, body: result } = await authCall(path, { method: 'POST', body });
    if (!response.ok) {
      errorLine.textContent = messageOf(result, failureMessage);
      return;
    }
    if (result?.user) {
      await enterApp(result.user);
    } else {
      // Signed up but not signed in (e.g. email verification is required).
      showAuth('sign-in', 'Your account was created. Sign in to continue.');
    }
  } catch (error) {
    handleFailure(error, (failure) => {
      errorLine.textContent = failure.message;
    });
  } finally {
    setBusy(form, false);
  }
}

view.signInForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const data = new FormData(view.signInForm);
  const email = String(data.get('email') ?? '').trim();
  const password = String(data.get('password') ?? '');
  if (email === '' || password === '') {
    view.signInError.textContent = 'Enter your email and password.';
    return;
  }
  submitAuth(
    view.signInForm,
    view.signInError,
    '/sign-in/email',
    { email, password },
    'Sign-in failed. Check your email and password.',
  );
});

view.signUpForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const data = new FormData(view.signUpForm);
  const name = String(data.get('name') ?? '').trim();
  const email = String(data.get('email') ?? '').trim();
  const password = String(data.get('password') ?? '');
  if (name === '' || email === '' || password === '') {
    view.signUpError.textContent = 'Enter your name, email and a password.';
    return;
  }
  submitAuth(
    view.signUpForm,
    view.signUpError,
    '/sign-up/email',
    { name, email, password },
    'Could not create the account.',
  );
});

view.signOut.addEventListener('click', async () => {
  view.signOut.disabled = true;
  try {
    await authCall('/sign-out', { method: 'POST', body: {} });
  } catch {
    // Signed out locally either way; the cookie expires on its own.
  } finally {
    view.signOut.disabled = false;
    forgetSession();
    showAuth('sign-in', 'You are signed out.');
  }
});

// ---------------------------------------------------------------------------------------------
// Start: resume the session the cookie carries, if any.

async function start() {
  showLoading();
  try {
    const { response, body } = await authCall('/get-session');
    if (response.ok && body?.user) {
      await enterApp(body.user);
      return;
    }
    showAuth('sign-in');
  } catch (error) {
    handleFailure(error, (failure) => showAuth('sign-in', failure.message));
  }
}

start();
