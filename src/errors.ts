/** A failure whose status and `detail` are meant for the client. */
export class HttpError extends Error {
  override name = 'HttpError';

  constructor(
    readonly statusCode: number,
    readonly detail: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(detail);
  }
}

export class NotFoundError extends HttpError {
  constructor(detail = 'Not Found') {
    super(404, detail);
  }
}

/** 401 with the challenge RFC 6750 asks for; `reason` is a short code for logs and metrics. */
export class UnauthorizedError extends HttpError {
  constructor(
    detail: string,
    readonly reason: string,
  ) {
    super(401, detail, { 'www-authenticate': 'Bearer' });
  }
}

export class ForbiddenError extends HttpError {
  constructor(detail: string) {
    super(403, detail);
  }
}

export class ServiceUnavailableError extends HttpError {
  constructor(detail: string, retryAfterSeconds = 5) {
    super(503, detail, { 'retry-after': String(retryAfterSeconds) });
  }
}

/** One entry of a FastAPI-style 422 `detail` list. */
export interface ValidationIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
}

export class ValidationError extends Error {
  override name = 'ValidationError';
  readonly statusCode = 422;

  constructor(readonly issues: ValidationIssue[]) {
    super(issues.map((issue) => `${issue.loc.join('.')}: ${issue.msg}`).join('; '));
  }
}
