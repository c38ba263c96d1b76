import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StaticTokenProvider } from './auth.js';
import { KommoClient } from './client.js';
import {
  CircuitBreaker,
  SlidingWindowLimiter,
  StoreRateLimiter,
  getAccountLimiter,
  resetAccountLimiters,
} from './rate-limit.js';
import { DEFAULT_ACCESS_TOKEN, KommoSimulator } from './simulator/index.js';
import { openSqliteStore } from '../store/sqlite.js';

describe('SlidingWindowLimiter', () => {
  it('grants `limit` at once, then serves waiters FIFO as slots free', async () => {
    const limiter = new SlidingWindowLimiter(2, 100);
    const t0 = performance.now();
    const order: number[] = [];
    const grantedAt: number[] = [];
    await Promise.all([0, 1, 2, 3, 4].map(async (i) => {
      const release = await limiter.acquire();
      order.push(i);
      grantedAt.push(performance.now() - t0);
      release();
    }));
    assert.deepEqual(order, [0, 1, 2, 3, 4]);
    assert.ok(grantedAt[1]! < 20, 'first two immediately');
    assert.ok(grantedAt[2]! >= 95 && grantedAt[4]! >= 195, `then one window apart: ${grantedAt.map(Math.round).join(',')}`);
  });

  it('counts a slot until its release, then a full window after it', async () => {
    const limiter = new SlidingWindowLimiter(1, 50);
    const first = await limiter.acquire();
    let second = false;
    const pending = limiter.acquire().then((r) => {
      second = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 120));
    assert.equal(second, false, 'an unreleased request keeps its slot past the window');
    const releasedAt = performance.now();
    first();
    (await pending)();
    assert.ok(performance.now() - releasedAt >= 49, 'the window starts at the release');
  });

  it('drops an aborted waiter without disturbing the queue', async () => {
    const limiter = new SlidingWindowLimiter(1, 50);
    const hold = await limiter.acquire();
    const ctl = new AbortController();
    const aborted = limiter.acquire(ctl.signal);
    const next = limiter.acquire();
    ctl.abort(new Error('gave up'));
    await assert.rejects(aborted, /gave up/);
    assert.equal(limiter.waiting, 1);
    hold();
    (await next)();
    assert.equal(limiter.waiting, 0);
  });

  it('usage() counts the slots of the current window and the queue, read-only', async () => {
    let t = 0;
    const limiter = new SlidingWindowLimiter(2, 1000, () => t);
    assert.deepEqual(limiter.usage(), { inUse: 0, limit: 2, waiting: 0 });
    const r1 = await limiter.acquire();
    (await limiter.acquire())();
    assert.deepEqual(limiter.usage(), { inUse: 2, limit: 2, waiting: 0 });
    t = 1001;
    assert.deepEqual(limiter.usage(), { inUse: 1, limit: 2, waiting: 0 }, 'the released slot left the window; the held one still counts');
    r1();
    assert.deepEqual(limiter.usage(), { inUse: 1, limit: 2, waiting: 0 }, 'released now: counts for one more window');
  });

  it('getAccountLimiter returns one limiter per account', () => {
    resetAccountLimiters();
    const a = getAccountLimiter('acct-a', 7);
    assert.equal(getAccountLimiter('acct-a', 3), a);
    assert.notEqual(getAccountLimiter('acct-b', 7), a);
    resetAccountLimiters();
  });
});

describe('StoreRateLimiter', () => {
  it('shares one budget between two "processes" on one store', async () => {
    const store = await openSqliteStore(':memory:');
    await store.migrate();
    try {
      const p1 = new StoreRateLimiter(store, 'kommo:shared', 3, 200);
      const p2 = new StoreRateLimiter(store, 'kommo:shared', 3, 200);
      const t0 = Date.now();
      const at: number[] = [];
      await Promise.all([p1, p2, p1, p2, p1, p2].map(async (l) => {
        const release = await l.acquire();
        at.push(Date.now() - t0);
        release();
      }));
      at.sort((a, b) => a - b);
      assert.ok(at[2]! < 50, `three at once: ${at.join(',')}`);
      assert.ok(at[3]! >= 190, `the fourth waits for the shared window: ${at.join(',')}`);
    } finally {
      await store.close();
    }
  });
});

describe('CircuitBreaker', () => {
  it('opens after 3 x 429 within 10 s, half-opens after the cool-down, doubles when it persists', () => {
    let now = 0;
    const b = new CircuitBreaker({ now: () => now });
    assert.equal(b.record429(), 0);
    now += 4_000;
    assert.equal(b.record429(), 0);
    now += 4_000;
    assert.equal(b.record429(), 30_000);
    const open = b.check();
    assert.equal(open.state, 'open');
    assert.equal(open.state === 'open' && open.retryAfterMs, 30_000);

    now += 30_000;
    assert.equal(b.check().state, 'closed');
    assert.equal(b.record429(), 60_000, 'one 429 while half-open re-opens it, doubled');
    now += 60_000;
    assert.equal(b.check().state, 'closed');
    b.recordSuccess();
    assert.equal(b.record429(), 0, 'a success closed it and reset the count');
  });

  it('429s spread over more than 10 s do not open it', () => {
    let now = 0;
    const b = new CircuitBreaker({ now: () => now });
    for (let i = 0; i < 5; i++) {
      assert.equal(b.record429(), 0);
      now += 6_000;
    }
    assert.equal(b.check().state, 'closed');
  });

  it('a 403 opens it at once, for longer, with a clear message', () => {
    let now = 0;
    const b = new CircuitBreaker({ now: () => now });
    assert.equal(b.record403(), 600_000);
    const s = b.check();
    assert.equal(s.state, 'open');
    assert.ok(s.state === 'open' && s.status === 403 && /Kommo blocked API access \(403\)/.test(s.detail));
  });
});

describe('rate limit against the simulator', () => {
  it('Kommo never sees more than 7 requests in any 1 s window while 100 calls run', async () => {
    resetAccountLimiters();
    const sim = new KommoSimulator({ subdomain: 'acme' });
    const baseUrl = await sim.listen(0);
    try {
      const statuses: number[] = [];
      const client = new KommoClient({
        account: 'rate-100',
        baseUrl,
        auth: new StaticTokenProvider(DEFAULT_ACCESS_TOKEN),
        limiter: getAccountLimiter('rate-100', 7),
        breaker: new CircuitBreaker(),
        onRequest: (i) => statuses.push(i.status),
      });
      const contact = sim.createContact({ name: 'Ann', email: 'ann@x.com' });
      const lead = sim.createLead({ name: 'Deal', price: 1, contactIds: [contact.id] });
      // A mix of calls, as the router and worker would make them.
      await Promise.all(Array.from({ length: 100 }, (_, i) => {
        switch (i % 4) {
          case 0: return client.getLeadsByIds([lead.id], { withContacts: true });
          case 1: return client.getContactsByIds([contact.id]);
          case 2: return client.getAccount();
          default: return client.addNotes([{ entityId: lead.id, text: `note ${i}` }]);
        }
      }));
      assert.equal(sim.requests.length, 100);
      assert.ok(statuses.every((s) => s === 200), 'no 429 was ever returned');
      assert.ok(sim.maxRequestsInWindow(1000) <= 7, `max in 1 s: ${sim.maxRequestsInWindow(1000)}`);
    } finally {
      await sim.close();
      resetAccountLimiters();
    }
  });
});
