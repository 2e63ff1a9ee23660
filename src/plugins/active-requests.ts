import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { setImmediate as nextLoopTurn } from 'node:timers/promises';

/**
 * Bounds how many requests the process works on at once. When a response finishes while
 * `limit` others are still being handled, its keep-alive connection is paused: the client's
 * next request stays unread in the kernel's socket buffer, where it costs no memory or CPU,
 * until another request finishes and the oldest paused connection is resumed.
 *
 * Why: at 1 000 connections every request Node has read waits about a second for its turn,
 * long enough for what it allocated to be promoted out of V8's young generation; the scavenges
 * copying a thousand requests' state and the garbage piling up in the old space cost 40 % more
 * CPU per response and 100 MB more RSS than the same load from 64 connections (npm run bench,
 * README "Requests in progress"). Waiting in the socket buffer instead, a request is read when
 * it can be served, and it is served as fast as at 64 connections. The requests still wait as
 * long in all, only elsewhere.
 *
 * Paused connections are resumed in the order they were paused, and a connection that gets
 * its answer while others wait queues behind them, so that no client overtakes another. A
 * resumed connection holds a place only until its request could have been read (two event loop
 * turns): one whose client has nothing to send yet is an idle keep-alive connection again, and
 * the next one waiting gets the place. A new connection's first request is always read (it is
 * not known to be keep-alive yet), and a connection being closed is never paused.
 */
export interface ActiveRequestLimit {
  /** Requests being handled now. */
  readonly active: number;
  /** Connections paused now, each with a request (or the client's next one) unread. */
  readonly held: number;
  /**
   * For a shutdown: stops pausing, resumes every paused connection, and resolves once Node
   * has read what they had sent, so that those requests are answered (Fastify answers 503
   * while it closes) instead of being dropped with connections Node considers idle.
   */
  releaseAll(): Promise<void>;
}

interface HeldConnection {
  socket: Socket;
  /** The keep-alive timeout Node had set on it: the quiet while held is ours, not the client's. */
  idleTimeoutMs: number;
}

export function limitActiveRequests(server: Server, limit: number): ActiveRequestLimit {
  let active = 0;
  // Resumed connections whose next request has not been read yet: each holds a place for a
  // moment, or a burst of resumes before their requests arrive would overshoot the limit.
  let resuming = 0;
  let releasing = false;
  const held: HeldConnection[] = [];
  /** The place each resumed connection holds; a later resume of the socket gets a new one. */
  const places = new WeakMap<Socket, object>();

  const giveBack = (socket: Socket, place: object) => {
    if (places.get(socket) !== place) return;
    places.delete(socket);
    resuming--;
    admit();
  };
  const resume = ({ socket, idleTimeoutMs }: HeldConnection) => {
    if (socket.destroyed) return;
    socket.setTimeout(idleTimeoutMs);
    const place = {};
    places.set(socket, place);
    resuming++;
    socket.resume();
    // A request the client has already sent is read in the next poll phase, within two loop
    // turns. A client that has sent nothing yet (one between requests, the usual case below
    // saturation) gives its place back then: held for longer, idle connections took the
    // places from requests waiting to be read, and the queue of held connections never
    // drained (p50 354 ms at 2 000 req/s from 1 000 connections, against 3–8 ms without).
    // A closed connection's place comes back the same way.
    setImmediate(() => setImmediate(() => giveBack(socket, place)));
  };
  /** Resumes the oldest held connections while there is room. */
  const admit = () => {
    while (active + resuming < limit) {
      const next = held.shift();
      if (next === undefined) return;
      resume(next);
    }
  };

  server.on('request', (request, response) => {
    const { socket } = request;
    if (places.delete(socket)) resuming--;
    active++;
    // 'close' follows 'finish', where Node has just armed the keep-alive timeout, and also
    // comes when the client went away before its answer.
    response.once('close', () => {
      active--;
      // Behind the others already waiting, not ahead of them: first come, first read.
      const mustWait = held.length > 0 || active + resuming >= limit;
      // Not writable: being closed, or already destroyed.
      if (!releasing && mustWait && socket.writable) {
        held.push({ socket, idleTimeoutMs: socket.timeout ?? 0 });
        // Node's keep-alive timer would otherwise close a connection held longer than
        // KEEP_ALIVE_TIMEOUT_MS, dropping the request its client has already sent.
        socket.setTimeout(0);
        socket.pause();
      }
      admit();
    });
  });

  return {
    get active() {
      return active;
    },
    get held() {
      return held.length;
    },
    async releaseAll() {
      releasing = true;
      for (const connection of held.splice(0)) resume(connection);
      // Reading what a resumed socket holds takes an event loop turn (its poll phase).
      await nextLoopTurn();
      await nextLoopTurn();
    },
  };
}
