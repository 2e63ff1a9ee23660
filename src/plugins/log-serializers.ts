import { stdSerializers } from 'pino';

type LoggedError = Record<string, unknown> & { type: string; message: string; stack: string };

/**
 * Drizzle's query errors carry the statement's parameters (emails, password hashes, task
 * text) in `params` and in the message. Logs keep the SQL and the driver's error, never
 * the values.
 */
export function serializeError(error: Error): LoggedError {
  return scrub({ ...stdSerializers.err(error) });
}

function scrub(serialized: LoggedError): LoggedError {
  const { params: _params, cause, ...rest } = serialized;
  const cleaned: LoggedError = {
    ...rest,
    type: String(rest.type),
    message: stripParams(String(rest.message)),
    stack: stripParams(String(rest.stack)),
  };
  if (isLoggedError(cause)) cleaned.cause = scrub(cause);
  return cleaned;
}

function isLoggedError(value: unknown): value is LoggedError {
  return typeof value === 'object' && value !== null && 'message' in value;
}

function stripParams(text: string): string {
  return text.replace(/\nparams: [^\n]*/g, '\nparams: [redacted]');
}
