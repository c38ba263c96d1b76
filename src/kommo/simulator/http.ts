/** Response and query helpers shared by the simulator routes: HAL bodies, problem+json, Kommo paging. */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { isRecord } from '../../model/json.js';

export const MAX_PAGE_LIMIT = 250;
export const DEFAULT_PAGE_LIMIT = 50;

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  402: 'Payment Required',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  422: 'Unprocessable Entity',
  429: 'Too Many Requests',
  500: 'ErrInternalServer',
};

export interface ValidationError {
  code: string;
  path: string;
  detail: string;
}

export interface ItemErrors {
  request_id: string;
  errors: ValidationError[];
}

export function problemBody(status: number, detail: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { title: TITLES[status] ?? 'Error', type: `https://httpstatus.es/${status}`, status, detail, ...extra };
}

export function sendProblem(reply: FastifyReply, status: number, detail: string, extra: Record<string, unknown> = {}): FastifyReply {
  return reply
    .code(status)
    .header('content-type', 'application/problem+json')
    .send(JSON.stringify(problemBody(status, detail, extra)));
}

/** Kommo's 400 shape: one entry per failing batch item, keyed by the item's request_id. */
export function sendValidationErrors(reply: FastifyReply, items: ItemErrors[]): FastifyReply {
  return reply
    .code(400)
    .header('content-type', 'application/problem+json')
    .send(
      JSON.stringify({
        'validation-errors': items,
        ...problemBody(400, 'Request validation failed'),
      }),
    );
}

export function sendHal(reply: FastifyReply, body: unknown, status = 200): FastifyReply {
  return reply.code(status).header('content-type', 'application/hal+json').send(JSON.stringify(body));
}

/** Kommo answers an empty list with 204 and no body at all. */
export function sendNoContent(reply: FastifyReply): FastifyReply {
  return reply.code(204).send();
}

/** Query access that understands Kommo's bracket forms: `f[]=1&f[]=2`, `f[0]=1`, `f=1,2`. */
export class KommoQuery {
  readonly params: URLSearchParams;
  constructor(rawQuery: string) {
    this.params = new URLSearchParams(rawQuery);
  }

  one(name: string): string | undefined {
    const v = this.params.get(name);
    return v === null || v === '' ? undefined : v;
  }

  list(name: string): string[] {
    const out: string[] = [];
    for (const [key, value] of this.params) {
      if (key !== name && key !== `${name}[]` && !isIndexedKey(key, name)) continue;
      for (const part of value.split(',')) {
        const t = part.trim();
        if (t !== '') out.push(t);
      }
    }
    return out;
  }

  /** Integer list; non-numeric entries are dropped the way Kommo ignores them. */
  ints(name: string): number[] {
    return this.list(name)
      .map(Number)
      .filter((n) => Number.isInteger(n));
  }

  int(name: string): number | undefined {
    const v = this.one(name);
    if (v === undefined) return undefined;
    const n = Number(v);
    return Number.isFinite(n) ? Math.trunc(n) : undefined;
  }

  /** `with=contacts,leads` */
  withs(): Set<string> {
    return new Set(this.list('with'));
  }
}

function isIndexedKey(key: string, name: string): boolean {
  return key.startsWith(`${name}[`) && /^\[\d+\]$/.test(key.slice(name.length));
}

export type PageParams = { ok: true; page: number; limit: number } | { ok: false; status: number; detail: string };

export function pageParams(q: KommoQuery): PageParams {
  const page = q.int('page') ?? 1;
  const limit = q.int('limit') ?? DEFAULT_PAGE_LIMIT;
  if (limit > MAX_PAGE_LIMIT) return { ok: false, status: 422, detail: `Limit ${MAX_PAGE_LIMIT} per page` };
  return { ok: true, page: Math.max(1, page), limit: Math.max(1, limit) };
}

/** Everything needed to build absolute `_links` hrefs for this request. */
export interface LinkBase {
  /** `http://host:port` + plugin prefix */
  api: string;
  /** Path of this request, prefix included, no query. */
  path: string;
  query: URLSearchParams;
}

export function linkBase(req: FastifyRequest, prefix: string): LinkBase {
  const origin = `${req.protocol}://${req.host}`;
  const url = new URL(req.url, origin);
  return { api: origin + prefix, path: origin + url.pathname, query: url.searchParams };
}

export function selfLink(href: string): { self: { href: string } } {
  return { self: { href } };
}

/** `_links` for a list page: `next` only when another page exists (the client stops on its absence). */
export function pageLinks(base: LinkBase, page: number, limit: number, hasNext: boolean): Record<string, { href: string }> {
  const at = (p: number): string => {
    const q = new URLSearchParams(base.query);
    q.set('page', String(p));
    q.set('limit', String(limit));
    return `${base.path}?${q.toString()}`;
  };
  const links: Record<string, { href: string }> = { self: { href: at(page) } };
  if (hasNext) links.next = { href: at(page + 1) };
  if (page > 1) links.prev = { href: at(page - 1) };
  return links;
}

export function paginate<T>(items: T[], page: number, limit: number): { slice: T[]; hasNext: boolean } {
  const start = (page - 1) * limit;
  return { slice: items.slice(start, start + limit), hasNext: start + limit < items.length };
}
