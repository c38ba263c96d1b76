import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { StaticTokenProvider } from './auth.js';
import { KommoClient } from './client.js';
import { KommoLoader, mainContactId } from './loader.js';
import { CircuitBreaker, SlidingWindowLimiter } from './rate-limit.js';
import { DEFAULT_ACCESS_TOKEN, KommoSimulator } from './simulator/index.js';

describe('KommoLoader over the simulator', () => {
  const sim = new KommoSimulator({ subdomain: 'acme' });
  let client: KommoClient;
  const leadIds: number[] = [];
  const emailOf = new Map<number, string>();

  before(async () => {
    const baseUrl = await sim.listen(0);
    client = new KommoClient({
      account: 'loader-test',
      baseUrl,
      auth: new StaticTokenProvider(DEFAULT_ACCESS_TOKEN),
      limiter: new SlidingWindowLimiter(7),
      breaker: new CircuitBreaker(),
    });
    for (let i = 0; i < 2000; i++) {
      const email = `person${i}@example.com`;
      const contact = sim.createContact({ name: `Person ${i}`, email });
      const lead = sim.createLead({ name: `Deal ${i}`, price: i, contactIds: [contact.id], fields: { Industry: 'SaaS' } });
      leadIds.push(lead.id);
      emailOf.set(lead.id, email);
    }
  });
  after(() => sim.close());

  it('serves 2,000 concurrent loadLead calls with exactly 8 lead + 8 contact requests', async () => {
    sim.resetLog();
    const loader = new KommoLoader(client);
    const loaded = await Promise.all(leadIds.map((id) => loader.loadLead(id)));

    const paths = sim.requests.map((r) => r.path);
    assert.equal(paths.filter((p) => p === '/api/v4/leads').length, 8);
    assert.equal(paths.filter((p) => p === '/api/v4/contacts').length, 8);
    assert.equal(paths.length, 16);
    assert.ok(sim.requests.every((r) => r.status === 200), 'no request was refused');
    for (const r of sim.requests.filter((x) => x.path === '/api/v4/leads')) {
      const q = new URLSearchParams(r.query);
      assert.equal(q.getAll('filter[id][]').length, 250);
      assert.equal(q.get('with'), 'contacts,loss_reason');
    }

    loaded.forEach((l, i) => {
      assert.ok(l, `lead ${leadIds[i]} loaded`);
      assert.equal(l.lead.id, leadIds[i]);
      assert.equal(l.lead.price, i);
      const email = l.contact?.custom_fields_values?.find((f) => f.field_code === 'EMAIL')?.values[0]?.value;
      assert.equal(email, emailOf.get(l.lead.id));
      assert.equal(l.company, null);
    });
  });

  it('withCompanies: 300 concurrent loadLead calls cost exactly 2 lead + 2 contact + 2 company requests', async () => {
    const ids = leadIds.slice(0, 300);
    const companyOf = new Map<number, string>();
    ids.forEach((id, i) => {
      const name = `Company ${i}`;
      sim.createCompany({ name, leadIds: [id] });
      companyOf.set(id, name);
    });
    sim.resetLog();
    const loader = new KommoLoader(client, { withCompanies: true });
    const loaded = await Promise.all(ids.map((id) => loader.loadLead(id)));

    const paths = sim.requests.map((r) => r.path);
    assert.equal(paths.filter((p) => p === '/api/v4/leads').length, 2);
    assert.equal(paths.filter((p) => p === '/api/v4/contacts').length, 2);
    assert.equal(paths.filter((p) => p === '/api/v4/companies').length, 2);
    assert.equal(paths.length, 6);
    assert.ok(sim.requests.every((r) => r.status === 200), 'no request was refused');
    const companyIdCounts = sim.requests
      .filter((r) => r.path === '/api/v4/companies')
      .map((r) => new URLSearchParams(r.query).getAll('filter[id][]').length)
      .sort((a, b) => a - b);
    assert.deepEqual(companyIdCounts, [50, 250]);

    loaded.forEach((l, i) => {
      assert.ok(l, `lead ${ids[i]} loaded`);
      assert.equal(l.lead.id, ids[i]);
      assert.equal(l.company?.name, companyOf.get(l.lead.id));
      assert.equal(l.contact?.custom_fields_values?.find((f) => f.field_code === 'EMAIL')?.values[0]?.value, emailOf.get(l.lead.id));
    });
  });

  it('coalesces duplicate ids, answers null for a lead Kommo no longer has, and null contact for a lead without one', async () => {
    const lonely = sim.createLead({ name: 'No contact', price: 5 });
    const gone = sim.createLead({ name: 'Gone', price: 1 });
    sim.deleteLead(gone.id);
    sim.resetLog();
    const loader = new KommoLoader(client);
    const [a, b, c, d] = await Promise.all([
      loader.loadLead(leadIds[0]!),
      loader.loadLead(leadIds[0]!),
      loader.loadLead(lonely.id),
      loader.loadLead(gone.id),
    ]);
    assert.equal(a, b, 'same promise for the same id');
    assert.equal(c?.contact, null);
    assert.equal(c?.lead.name, 'No contact');
    assert.equal(d, null);
    const leadReq = sim.requests.filter((r) => r.path === '/api/v4/leads');
    assert.equal(leadReq.length, 1);
    assert.equal(new URLSearchParams(leadReq[0]!.query).getAll('filter[id][]').length, 3);
  });

  it('rejects every caller of a batch whose request failed, and the next batch works', async () => {
    const failing = new KommoLoader({
      getLeadsByIds: () => Promise.reject(new Error('boom')),
      getContactsByIds: () => Promise.resolve([]),
      getCompaniesByIds: () => Promise.resolve([]),
    });
    const results = await Promise.allSettled([failing.loadLead(1), failing.loadLead(2)]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
    const ok = await new KommoLoader(client).loadLead(leadIds[1]!);
    assert.equal(ok?.lead.id, leadIds[1]);
  });

  it('picks the is_main contact, else the first linked one', () => {
    const base = { tags: [], companies: [] };
    const lead = (contacts: Array<{ id: number; is_main?: boolean }>) =>
      ({ _embedded: { ...base, contacts } }) as unknown as Parameters<typeof mainContactId>[0];
    assert.equal(mainContactId(lead([{ id: 1 }, { id: 2, is_main: true }])), 2);
    assert.equal(mainContactId(lead([{ id: 3 }, { id: 4 }])), 3);
    assert.equal(mainContactId(lead([])), null);
  });
});
