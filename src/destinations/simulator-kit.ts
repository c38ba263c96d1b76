/**
 * The part every vendor simulator shares: recording requests and neutral items, injected faults
 * (failNext, outages that answer an error or never answer), and a per-second cap. The vendor's own
 * behaviour (endpoints, auth, payload rules, error bodies) stays in each simulator, written from the
 * vendor's documentation and sharing no code with its connector.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { SimulatedItem, SimulatedRequest, SimulatorFaults } from './types.js';

export interface HarnessOptions {
  /** The vendor's error body for an injected status (whatever shape the vendor documents). */
  errorBody(status: number): unknown;
  /**
   * Requests per second before the vendor answers 429 (with `Retry-After: 1`); undefined: no cap.
   * Counted after authentication, as vendors meter authenticated calls.
   */
  perSecond?: number;
  /** The vendor's answer when over `perSecond` (default: HTTP 429 with `errorBody(429)`). */
  rateLimited?(reply: FastifyReply): FastifyReply;
}

type Held = () => void;

export class SimulatorHarness {
  readonly requests: SimulatedRequest[] = [];
  readonly items: SimulatedItem[] = [];
  readonly faults: SimulatorFaults;
  private failures: { remaining: number; status: number; retryAfterSec?: number } = { remaining: 0, status: 500 };
  private down: { status: number } | 'timeout' | null = null;
  private delayMs = 0;
  private held: Held[] = [];
  private window = { second: 0, count: 0 };

  constructor(private readonly o: HarnessOptions) {
    this.faults = {
      failNext: (n, status, retryAfterSec) => {
        this.failures = retryAfterSec === undefined ? { remaining: n, status } : { remaining: n, status, retryAfterSec };
      },
      outage: (mode) => {
        this.down = mode;
        if (mode !== 'timeout') this.releaseHeld();
      },
      latency: (ms) => {
        this.delayMs = ms ?? 0;
      },
    };
  }

  /** An item the vendor applied (or refused): what tests and benches count. */
  item(i: Omit<SimulatedItem, 'at'>): void {
    this.items.push({ at: Date.now(), ...i });
  }

  /**
   * The vendor's `onSend` hook: holds the answer for `faults.latency` after the request was
   * applied (a wait before the handler would not do: Fastify skips the handler of a request whose
   * client has gone).
   */
  readonly beforeAnswer = async (): Promise<void> => {
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
  };

  /**
   * Call first in the vendor's `onRequest` hook: answers injected faults and returns the reply,
   * or undefined to go on (to the vendor's auth check, then `overLimit`).
   */
  async fault(_request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    if (this.down === 'timeout') {
      // Never answered while the outage lasts: the client's own timeout is what ends it.
      await new Promise<void>((resolve) => this.held.push(resolve));
      return reply.code(503).send(this.o.errorBody(503));
    }
    if (this.down) return reply.code(this.down.status).send(this.o.errorBody(this.down.status));
    if (this.failures.remaining > 0) {
      this.failures.remaining -= 1;
      const { status, retryAfterSec } = this.failures;
      if (retryAfterSec !== undefined) void reply.header('retry-after', String(retryAfterSec));
      return reply.code(status).send(this.o.errorBody(status));
    }
    return undefined;
  }

  /** Call after the vendor's auth check: the per-second cap, when one is set. */
  overLimit(reply: FastifyReply): FastifyReply | undefined {
    const limit = this.o.perSecond;
    if (limit === undefined) return undefined;
    const second = Math.floor(Date.now() / 1000);
    this.window = this.window.second === second ? { second, count: this.window.count + 1 } : { second, count: 1 };
    if (this.window.count <= limit) return undefined;
    if (this.o.rateLimited) return this.o.rateLimited(reply);
    return reply.code(429).header('retry-after', '1').send(this.o.errorBody(429));
  }

  /**
   * Records every request with its final status. onSend, not onResponse: the record must exist
   * before the client sees the answer. `body` reads the parsed body the vendor's routes saw.
   */
  install(app: FastifyInstance, body: (request: FastifyRequest) => unknown): void {
    const prefix = app.prefix;
    app.addHook('onSend', async (request, reply, payload) => {
      const path = request.url.split('?')[0] ?? '';
      this.requests.push({
        at: Date.now(),
        method: request.method,
        path: path.startsWith(prefix) ? path.slice(prefix.length) : path,
        headers: { ...request.headers },
        body: body(request),
        status: reply.statusCode,
      });
      return payload;
    });
    app.addHook('onClose', async () => this.releaseHeld());
  }

  reset(): void {
    this.requests.length = 0;
    this.items.length = 0;
    this.failures = { remaining: 0, status: 500 };
    this.down = null;
    this.delayMs = 0;
    this.window = { second: 0, count: 0 };
    this.releaseHeld();
  }

  private releaseHeld(): void {
    const held = this.held;
    this.held = [];
    for (const release of held) release();
  }
}

/** The raw body of a request parsed as a Buffer (the simulators read bodies themselves, as vendors do). */
export function rawOf(body: unknown): Buffer {
  return Buffer.isBuffer(body) ? body : Buffer.alloc(0);
}

/** A JSON body: `ok` false (with the text) when it does not parse; an empty body is `undefined`. */
export function readJson(body: unknown): { ok: boolean; value: unknown } {
  const raw = rawOf(body);
  if (raw.length === 0) return { ok: true, value: undefined };
  try {
    return { ok: true, value: JSON.parse(raw.toString('utf8')) as unknown };
  } catch {
    return { ok: false, value: raw.toString('utf8') };
  }
}
