/** The part of autocannon's programmatic API the bench uses (the package ships no types). */
declare module 'autocannon' {
  namespace autocannon {
    interface Request {
      method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
      path?: string;
      headers?: Record<string, string>;
      body?: string;
    }

    /** One connection; `setupClient` may give it its own request list. */
    interface Client {
      setRequests(requests: Request[]): void;
    }

    interface Options {
      url: string;
      connections?: number;
      /** Seconds. */
      duration?: number;
      /** Requests per second over all connections (each connection gets its share per second). */
      overallRate?: number;
      /** Seconds before a request counts as timed out. */
      timeout?: number;
      requests?: Request[];
      setupClient?: (client: Client) => void;
    }

    interface Result {
      /** Connection errors and timeouts. */
      errors: number;
      timeouts: number;
      non2xx: number;
      resets: number;
      mismatches: number;
      /** Seconds. */
      duration: number;
      statusCodeStats: Record<string, { count: number }>;
      requests: { average: number; total: number; sent: number };
    }

    interface Instance extends PromiseLike<Result> {
      on(
        event: 'response',
        listener: (
          client: Client,
          statusCode: number,
          resBytes: number,
          responseTime: number,
        ) => void,
      ): Instance;
      stop(): void;
    }
  }

  function autocannon(options: autocannon.Options): autocannon.Instance;
  export = autocannon;
}
