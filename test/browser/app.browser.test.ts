/**
 * The page at `/` in a real browser: Debian's Chromium driven by playwright-core, against the real
 * server process (the compiled service, started as `npm start` starts it) on a free port and a
 * fresh database (PostgreSQL when DATABASE_URL is set, else PGlite in memory). Each test signs up
 * its own users in their own browser contexts (separate cookie jars), as separate people would.
 *
 * Chromium is never downloaded: it must be at /usr/bin/chromium (or CHROMIUM_PATH); without
 * it every test here fails with a message saying so.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  freePort,
  REPO_ROOT,
  type ServerDatabase,
  type ServerProcess,
  serverDatabase,
  startServer,
} from '../process.js';

const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const SCREENSHOT_DIR = join(REPO_ROOT, 'test-results');
const PASSWORD = 'correct-horse-battery-staple';
const PHONE = { width: 390, height: 844 };

let server: ServerProcess | undefined;
let origin = '';
let browser: Browser | undefined;
let database: ServerDatabase | undefined;
const openContexts: BrowserContext[] = [];

async function startAppServer(databaseEnv: Record<string, string>) {
  const port = await freePort();
  origin = `http://127.0.0.1:${port}`;
  server = await startServer({
    port,
    env: {
      NODE_ENV: 'test',
      BETTER_AUTH_URL: origin,
      CORS_ORIGINS: `${origin},http://localhost:${port}`,
      LOG_LEVEL: 'warn',
      // Every test signs people up from one IP: more than the default 20 a minute allows.
      RATE_LIMIT_AUTH_PER_MINUTE: '200',
      ...databaseEnv,
    },
  });
}

/**
 * Why the suite cannot run (no Chromium, the server did not start): kept and thrown by every
 * test, so each one is reported failed with the reason; a failing beforeAll would only mark
 * them skipped.
 */
let setupError: Error | undefined;

beforeAll(async () => {
  try {
    if (!existsSync(CHROMIUM_PATH)) {
      throw new Error(
        `Chromium is not installed at ${CHROMIUM_PATH}: the browser tests need it. ` +
          'Install it with `apt-get install chromium` (Debian) or set CHROMIUM_PATH; ' +
          'no browser is ever downloaded by these tests.',
      );
    }
    mkdirSync(SCREENSHOT_DIR, { recursive: true });
    database = await serverDatabase();
    await startAppServer(database.env);
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
  } catch (error) {
    setupError = error instanceof Error ? error : new Error(String(error));
  }
});

beforeEach(() => {
  if (setupError) throw setupError;
});

afterEach(async () => {
  await Promise.all(openContexts.splice(0).map((context) => context.close()));
});

afterAll(async () => {
  await Promise.all(openContexts.splice(0).map((context) => context.close()));
  await browser?.close();
  await server?.stop();
  await database?.drop();
});

// ---------------------------------------------------------------------------------------------
// Helpers: one person in one browser context

interface Person {
  page: Page;
  name: string;
  email: string;
  /** Uncaught page errors and Content-Security-Policy violations: always expected empty. */
  problems: string[];
}

async function openPage(viewport = { width: 1100, height: 800 }): Promise<Page> {
  if (browser === undefined) throw new Error('the browser did not start');
  const context = await browser.newContext({ viewport });
  openContexts.push(context);
  context.setDefaultTimeout(15_000);
  return context.newPage();
}

function watchProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) {
      problems.push(`CSP: ${message.text()}`);
    }
  });
  return problems;
}

async function signUp(label: string, viewport?: { width: number; height: number }) {
  const page = await openPage(viewport);
  const problems = watchProblems(page);
  const person: Person = {
    page,
    name: `${label} Tester`,
    email: `${label.toLowerCase()}-${randomUUID()}@example.com`,
    problems,
  };
  await page.goto(`${origin}/`);
  await page.getByRole('button', { name: 'Create an account' }).click();
  const form = page.locator('#sign-up-form');
  await form.getByLabel('Name').fill(person.name);
  await form.getByLabel('Email').fill(person.email);
  await form.getByLabel('Password').fill(PASSWORD);
  await form.getByRole('button', { name: 'Create account' }).click();
  await signedIn(page);
  return person;
}

async function signedIn(page: Page) {
  try {
    await page.locator('#tasks-view').waitFor({ state: 'visible' });
  } catch (error) {
    const errors = await page.locator('.form-error, .notice').allTextContents();
    throw new Error(`not signed in; the page says: ${JSON.stringify(errors)}\n${String(error)}`);
  }
}

async function signIn(page: Page, email: string, password: string) {
  const form = page.locator('#sign-in-form');
  await form.getByLabel('Email').fill(email);
  await form.getByLabel('Password').fill(password);
  await form.getByRole('button', { name: 'Sign in' }).click();
}

const titles = (page: Page) => page.locator('#task-list .task-title').allTextContents();

async function expectTitles(page: Page, expected: string[]) {
  await expect.poll(() => titles(page), { timeout: 10_000 }).toEqual(expected);
}

async function addTask(page: Page, title: string, description?: string) {
  const before = (await titles(page)).length;
  await page.getByLabel('Title', { exact: true }).fill(title);
  if (description !== undefined) await page.getByLabel('Description').fill(description);
  await page.getByRole('button', { name: 'Add task' }).click();
  await expect.poll(async () => (await titles(page)).length, { timeout: 10_000 }).toBe(before + 1);
}

const taskItem = (page: Page, title: string) =>
  page.locator('#task-list li').filter({ has: page.locator('.task-title', { hasText: title }) });

async function showStatus(page: Page, status: 'All' | 'Pending' | 'Completed') {
  await page.locator('#tasks-view').getByLabel(status, { exact: true }).check();
}

async function screenshot(page: Page, name: string) {
  await page.screenshot({ path: join(SCREENSHOT_DIR, name), fullPage: true });
}

// ---------------------------------------------------------------------------------------------

describe('the web page in Chromium', { timeout: 90_000 }, () => {
  it('when / is requested, then the page and its assets are served, and unknown paths stay JSON 404s', async () => {
    const page = await fetch(`${origin}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await page.text();
    expect(html).toContain('<script type="module" src="/app.js"></script>');
    // helmet's default CSP: the module script is same-origin, so script-src 'self' allows it
    // (the other tests fail on any CSP violation the page reports).
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");

    const script = await fetch(`${origin}/app.js`);
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toMatch(/javascript/);
    const styles = await fetch(`${origin}/styles.css`);
    expect(styles.headers.get('content-type')).toMatch(/^text\/css/);

    const missing = await fetch(`${origin}/no-such-page`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ detail: 'Not Found' });

    // The page is not part of the API document.
    const openapi = (await (await fetch(`${origin}/openapi.json`)).json()) as {
      paths: Record<string, unknown>;
    };
    expect(Object.keys(openapi.paths)).not.toContain('/');
    expect(Object.keys(openapi.paths)).not.toContain('/app.js');
  });

  it('when two people sign up in separate browsers, then each sees only the tasks they added', async () => {
    const alice = await signUp('Alice');
    await expect
      .poll(() => alice.page.locator('#account-name').textContent(), { timeout: 10_000 })
      .toContain(alice.email);
    await expect
      .poll(() => alice.page.locator('#empty').textContent(), { timeout: 10_000 })
      .toContain('No tasks yet');
    await addTask(alice.page, 'Buy milk', 'Two litres, semi-skimmed');
    await addTask(alice.page, 'Pay rent');
    await addTask(alice.page, 'Call the plumber');

    const bob = await signUp('Bob');
    await expectTitles(bob.page, []);
    await addTask(bob.page, 'Bob: renew passport');

    await expectTitles(alice.page, ['Call the plumber', 'Pay rent', 'Buy milk']);
    await expect(
      taskItem(alice.page, 'Buy milk').locator('.task-description').textContent(),
    ).resolves.toBe('Two litres, semi-skimmed');
    await expect
      .poll(() => alice.page.locator('#task-count').textContent(), { timeout: 10_000 })
      .toBe('3 tasks');
    await expectTitles(bob.page, ['Bob: renew passport']);

    // A reload keeps each person signed in (session cookie) and still shows only their own.
    await alice.page.reload();
    await signedIn(alice.page);
    await expectTitles(alice.page, ['Call the plumber', 'Pay rent', 'Buy milk']);
    await bob.page.reload();
    await signedIn(bob.page);
    await expectTitles(bob.page, ['Bob: renew passport']);

    await screenshot(alice.page, 'browser-alice-tasks.png');
    expect(alice.problems).toEqual([]);
    expect(bob.problems).toEqual([]);
  });

  it('when a person toggles, filters and sorts, then the list shows the matching tasks in order', async () => {
    const carol = await signUp('Carol');
    const { page } = carol;
    await addTask(page, 'banana bread');
    await addTask(page, 'Apple pie');
    await addTask(page, 'cherry jam');
    await expectTitles(page, ['cherry jam', 'Apple pie', 'banana bread']);

    await taskItem(page, 'Apple pie').getByRole('checkbox').check();
    await expect
      .poll(() => taskItem(page, 'Apple pie').getAttribute('class'), { timeout: 10_000 })
      .toContain('done');

    await showStatus(page, 'Pending');
    await expectTitles(page, ['cherry jam', 'banana bread']);
    await showStatus(page, 'Completed');
    await expectTitles(page, ['Apple pie']);
    await expect(taskItem(page, 'Apple pie').getByRole('checkbox').isChecked()).resolves.toBe(true);

    await showStatus(page, 'All');
    await page.getByLabel('Sort').selectOption({ label: 'Title A→Z' });
    await expectTitles(page, ['Apple pie', 'banana bread', 'cherry jam']);
    await page.getByLabel('Sort').selectOption({ label: 'Newest first' });
    await expectTitles(page, ['cherry jam', 'Apple pie', 'banana bread']);

    // Unticking puts it back among the pending ones; none is left completed.
    await taskItem(page, 'Apple pie').getByRole('checkbox').uncheck();
    await expect
      .poll(() => taskItem(page, 'Apple pie').getAttribute('class'), { timeout: 10_000 })
      .not.toContain('done');
    await showStatus(page, 'Completed');
    await expectTitles(page, []);
    await expect
      .poll(() => page.locator('#empty').textContent(), { timeout: 10_000 })
      .toBe('No completed tasks.');
    expect(carol.problems).toEqual([]);
  });

  it('when a person edits and deletes tasks, then the list shows each change', async () => {
    const dave = await signUp('Dave');
    const { page } = dave;
    await addTask(page, 'Draft report', 'first pass');
    await addTask(page, 'Water plants');

    await taskItem(page, 'Draft report').getByRole('button', { name: 'Edit' }).click();
    const editForm = page.getByRole('form', { name: 'Edit “Draft report”' });
    await editForm.getByLabel('Title').fill('Final report');
    await editForm.getByLabel('Description').fill('send to Erin by Friday');
    await editForm.getByRole('button', { name: 'Save' }).click();
    await expectTitles(page, ['Water plants', 'Final report']);
    await expect(
      taskItem(page, 'Final report').locator('.task-description').textContent(),
    ).resolves.toBe('send to Erin by Friday');

    // Cancelling the confirmation keeps the task; confirming deletes it.
    page.once('dialog', (dialog) => void dialog.dismiss());
    await taskItem(page, 'Water plants').getByRole('button', { name: 'Delete' }).click();
    await expectTitles(page, ['Water plants', 'Final report']);
    page.once('dialog', (dialog) => void dialog.accept());
    await taskItem(page, 'Water plants').getByRole('button', { name: 'Delete' }).click();
    await expectTitles(page, ['Final report']);

    await page.reload();
    await signedIn(page);
    await expectTitles(page, ['Final report']);
    expect(dave.problems).toEqual([]);
  });

  it('when the API rejects a title, then its message is shown next to the title field and nothing is added', async () => {
    const erin = await signUp('Erin');
    const { page } = erin;
    const title = page.locator('#new-title');
    const titleError = page.locator('#new-title-error');

    await title.fill('   ');
    await page.getByRole('button', { name: 'Add task' }).click();
    await expect
      .poll(() => titleError.textContent(), { timeout: 10_000 })
      .toContain('Title must not be empty');
    await expect(title.getAttribute('aria-invalid')).resolves.toBe('true');
    await expect(title.getAttribute('aria-describedby')).resolves.toBe('new-title-error');

    // The input's maxlength stops people typing more; remove it to reach the API's own rule.
    await page.evaluate("document.getElementById('new-title').removeAttribute('maxlength')");
    await title.fill('x'.repeat(201));
    await page.getByRole('button', { name: 'Add task' }).click();
    await expect
      .poll(() => titleError.textContent(), { timeout: 10_000 })
      .toContain('at most 200 characters');
    await screenshot(page, 'browser-validation-error.png');
    await expectTitles(page, []);

    // The same in the edit form: the message sits under that form's title field.
    await addTask(page, 'A fine title');
    await expect(titleError.textContent()).resolves.toBe('');
    await taskItem(page, 'A fine title').getByRole('button', { name: 'Edit' }).click();
    const editForm = page.getByRole('form', { name: 'Edit “A fine title”' });
    await editForm.getByLabel('Title').fill(' ');
    await editForm.getByRole('button', { name: 'Save' }).click();
    await expect
      .poll(() => editForm.locator('.field-error').first().textContent(), { timeout: 10_000 })
      .toContain('Title must not be empty');
    await editForm.getByRole('button', { name: 'Cancel' }).click();
    await expectTitles(page, ['A fine title']);
    expect(erin.problems).toEqual([]);
  });

  it('when a title contains HTML, then it is shown as plain text and never run', async () => {
    const mallory = await signUp('Mallory');
    const { page } = mallory;
    const hostile = '<img src=x onerror="window.__pwned=1"><b>bold</b>';
    await addTask(page, hostile, '<script>window.__pwned=2</script>');
    await expectTitles(page, [hostile]);
    await expect(
      page.locator('#task-list img, #task-list b, #task-list script').count(),
    ).resolves.toBe(0);
    await expect(page.evaluate<unknown>('window.__pwned')).resolves.toBeUndefined();
    expect(mallory.problems).toEqual([]);
  });

  it('when a person signs out, then the sign-in form returns, and signing in again shows their tasks', async () => {
    const frank = await signUp('Frank');
    const { page } = frank;
    await addTask(page, 'Frank keeps this');

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.locator('#sign-in-form').waitFor({ state: 'visible' });
    await expect
      .poll(() => page.locator('#auth-notice').textContent(), { timeout: 10_000 })
      .toBe('You are signed out.');
    await expect(page.locator('#tasks-view').isHidden()).resolves.toBe(true);
    await expect(page.locator('#task-list li').count()).resolves.toBe(0);
    await screenshot(page, 'browser-signed-out.png');

    // The session is gone on the server too: a reload lands on the sign-in form.
    await page.reload();
    await page.locator('#sign-in-form').waitFor({ state: 'visible' });

    await signIn(page, frank.email, 'not-the-password');
    await expect
      .poll(() => page.locator('#sign-in-error').textContent(), { timeout: 10_000 })
      .toBe('Invalid email or password');
    await expect(page.locator('#tasks-view').isHidden()).resolves.toBe(true);

    await signIn(page, frank.email, PASSWORD);
    await signedIn(page);
    await expectTitles(page, ['Frank keeps this']);
    expect(frank.problems).toEqual([]);
  });

  it('when someone signs up with an email already taken, then the error is shown on the form', async () => {
    const grace = await signUp('Grace');
    const page = await openPage();
    await page.goto(`${origin}/`);
    await page.getByRole('button', { name: 'Create an account' }).click();
    const form = page.locator('#sign-up-form');
    await form.getByLabel('Name').fill('Someone Else');
    await form.getByLabel('Email').fill(grace.email);
    await form.getByLabel('Password').fill(PASSWORD);
    await form.getByRole('button', { name: 'Create account' }).click();
    await expect
      .poll(() => page.locator('#sign-up-error').textContent(), { timeout: 10_000 })
      .toMatch(/already exists/i);
    await expect(page.locator('#tasks-view').isHidden()).resolves.toBe(true);
  });

  it('when the tasks API answers 401, then the page fetches a new token once and retries', async () => {
    const page = await openPage();
    const tokenRequests: string[] = [];
    page.on('request', (request) => {
      if (new URL(request.url()).pathname === '/api/auth/token') tokenRequests.push(request.url());
    });
    let rejected = 0;
    await page.route(/\/api\/[^/]+\/tasks\?/, async (route) => {
      if (rejected === 0) {
        rejected++;
        await route.fulfill({
          status: 401,
          contentType: 'application/json',
          headers: { 'www-authenticate': 'Bearer' },
          body: JSON.stringify({ detail: 'Token has expired' }),
        });
        return;
      }
      await route.continue();
    });

    await page.goto(`${origin}/`);
    await page.getByRole('button', { name: 'Create an account' }).click();
    const form = page.locator('#sign-up-form');
    await form.getByLabel('Name').fill('Heidi Tester');
    await form.getByLabel('Email').fill(`heidi-${randomUUID()}@example.com`);
    await form.getByLabel('Password').fill(PASSWORD);
    await form.getByRole('button', { name: 'Create account' }).click();
    await signedIn(page);

    await expect
      .poll(() => page.locator('#task-count').textContent(), { timeout: 10_000 })
      .toBe('0 tasks');
    expect(rejected).toBe(1);
    expect(tokenRequests).toHaveLength(2);
    await expect(page.locator('#list-error').textContent()).resolves.toBe('');
  });

  it('when the page is phone-width, then it fits without sideways scrolling', async () => {
    const ivan = await signUp('Ivan', PHONE);
    const { page } = ivan;
    await addTask(
      page,
      'A rather long task title that has to wrap on a narrow phone screen',
      'Notes',
    );
    await addTask(page, 'Short one');
    await taskItem(page, 'Short one').getByRole('checkbox').check();
    await expect
      .poll(() => taskItem(page, 'Short one').getAttribute('class'), { timeout: 10_000 })
      .toContain('done');
    const overflow = await page.evaluate<number>(
      'document.documentElement.scrollWidth - document.documentElement.clientWidth',
    );
    expect(overflow).toBe(0);
    await screenshot(page, 'browser-phone-tasks.png');
    expect(ivan.problems).toEqual([]);
  });
});
