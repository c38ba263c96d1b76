/**
 * Duplicates and reordering, with every registered destination: Kommo's webhooks for many stage
 * changes are delivered shuffled, each twice, and the engagement webhooks twice. Each effect happens
 * once (one sync note per stage change, one event per change in each tool, one hot-lead task), and
 * the final state in every destination that keeps people's fields equals the lead's latest state in
 * Kommo (enrichment reads Kommo's current state, and one lead's jobs run in order).
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import pino from 'pino';
import { parse, stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import { startWorld, type World } from '../../src/demo/world.js';
import { getDestination, registerDestination } from '../../src/destinations/index.js';
import { startService, type Service } from '../../src/runtime/service.js';
import { fake } from '../kit/fake-destination/index.js';
import { waitFor } from '../integration/wait.js';

registerDestination(fake);

const LEADS = 12;
const STAGES = ['Qualified', 'Demo scheduled', 'Proposal sent', 'Negotiation'];
let world: World;
let service: Service;

/** Deterministic shuffle (mulberry32), so a failure replays the same order. */
function shuffled<T>(items: T[], seed = 7): T[] {
  let a = seed;
  const rand = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

before(async () => {
  world = await startWorld({ overrides: { server: { port: 0, host: '127.0.0.1' }, log: { level: 'silent' }, worker: { poll: '50ms' } } });
  // Every destination also gets the stage key under one name, to compare final states.
  const cfg = parse(world.yaml) as { accounts: Record<string, { destinations: Record<string, { attributes?: Record<string, string> }> }> };
  for (const d of Object.values(cfg.accounts[world.account]!.destinations)) d.attributes = { ...d.attributes, ks_stage: 'stage.key' };
  const loaded = parseConfigText(stringify(cfg), 'duplicates.yaml', {});
  service = await startService({ loaded, log: pino({ level: 'silent' }), intake: true, work: true, port: 0, host: '127.0.0.1' });
});
after(async () => {
  await service?.close();
  await world?.close();
});

const idle = async () => {
  const s = await service.store.stats(Date.now());
  return s.inboxPending === 0 && s.jobs.pending === 0 && s.jobs.leased === 0;
};

it('shuffled, repeated webhooks: each effect once, and every destination ends with the lead\'s latest state', { timeout: 240_000 }, async () => {
  const k = world.kommo;
  const url = world.kommoWebhookUrl(service.url!);
  // Kommo's webhooks go to a URL that stores nothing (a closed port): the bodies are kept by the
  // simulator, and delivered below, shuffled and twice.
  k.subscribe('http://127.0.0.1:9/nowhere', ['add_lead', 'update_lead', 'status_lead', 'responsible_lead']);
  const leads = Array.from({ length: LEADS }, (_, i) => {
    const email = `dup${i}@example.com`;
    return { email, id: k.createLead({ name: `Dup ${i}`, contactIds: [k.createContact({ name: `Dup ${i}`, email, fields: { 'Email opt-in': true } }).id] }).id };
  });
  // Each lead moves through a different number of stages, so the latest states differ.
  leads.forEach((l, i) => {
    for (let s = 0; s <= i % STAGES.length; s++) k.moveLead(l.id, k.status(STAGES[s]!).id);
  });
  await k.flushWebhooks();
  const bodies = k.webhooksSent.map((w) => w.body);
  assert.ok(bodies.length >= LEADS * 2);
  for (const body of shuffled([...bodies, ...bodies])) {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
    assert.equal(res.status, 200);
  }
  await waitFor(idle, 'everything routed and delivered', 120_000);

  // One sync note per stage change, whatever the order and the repeats. (A note tells the state
  // that was synced: the lead's latest, which enrichment read from Kommo.)
  for (const [i, l] of leads.entries()) {
    const notes = [...k.notes.values()].filter((n) => n.entity_id === l.id && String(n.params.text).startsWith('kommo-sync:'));
    assert.equal(notes.length, (i % STAGES.length) + 1, `lead ${i}: one note per stage change (${JSON.stringify(notes.map((n) => n.params.text))})`);
  }
  // Every destination that keeps a person's fields (upsertPerson) holds each person's latest stage.
  // (Moosend keeps fields per list subscription, written on entering a mapped stage only.)
  for (const [type, v] of world.vendors) {
    if (!getDestination(type)!.supports.upsertPerson) continue;
    for (const [i, l] of leads.entries()) {
      const fields = v.sim.fieldsOf(l.email);
      assert.ok(fields, `${type} knows ${l.email}`);
      const latest = STAGES[i % STAGES.length]!.toLowerCase().replace(/ /g, '_');
      const stage = fields.ks_stage ?? (fields.traits as Record<string, unknown> | undefined)?.ks_stage;
      assert.equal(stage, latest, `${type}: ${l.email} ends in ${latest} (got ${JSON.stringify(stage)})`);
    }
  }
  const applied = new Map([...world.vendors].map(([type, v]) => [type, v.sim.items.filter((i) => i.ok && !i.duplicate).length]));

  // Everything again, shuffled: nothing new happens anywhere.
  const notesBefore = k.notes.size;
  for (const body of shuffled(bodies, 11)) {
    assert.equal((await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body })).status, 200);
  }
  await new Promise((r) => setTimeout(r, 1500));
  await waitFor(idle, 'nothing left to do', 30_000);
  assert.equal(k.notes.size, notesBefore, 'no new note');
  for (const [type, v] of world.vendors) assert.equal(v.sim.items.filter((i) => i.ok && !i.duplicate).length, applied.get(type), `${type}: nothing new applied`);
});

it('an engagement webhook delivered twice has its effect once', { timeout: 120_000 }, async () => {
  const k = world.kommo;
  world.subscribe(service.url!);
  for (const [name, v] of world.vendors) {
    if (!v.sim.sendEngagement) continue;
    // A lead of its own per tool: the hot-lead cooldown is per lead.
    const email = `twice.${name}@example.com`;
    const lead = k.createLead({ name: `Twice ${name}`, contactIds: [k.createContact({ name: `Twice ${name}`, email }).id] });
    await k.flushWebhooks();
    await waitFor(async () => (await idle()) && (await service.store.leadsByEmail(world.account, email)).length > 0, `${name}: synced and indexed`);
    const hook = world.vendorWebhookUrl(service.url!, name);
    const at = Date.now() - 60_000;
    // Two opens, each delivered twice: counted twice they would make a hot lead (3 opens).
    for (let i = 0; i < 2; i++) {
      for (let r = 0; r < 2; r++) assert.equal(await v.sim.sendEngagement(hook, 'opened', email, { eventId: `${name}-open-${i}`, timestamp: at + i * 1000, subject: 'Weekly digest' }), 200);
    }
    // One click, delivered twice: one note.
    for (let r = 0; r < 2; r++) assert.equal(await v.sim.sendEngagement(hook, 'clicked', email, { eventId: `${name}-click`, timestamp: at + 5000, subject: 'Weekly digest', link: 'https://acme.example/blog' }), 200);
    await waitFor(idle, `${name}'s webhooks handled`);
    const tasks = [...k.tasks.values()].filter((t) => t.entity_id === lead.id).length;
    const clickNotes = [...k.notes.values()].filter((n) => n.entity_id === lead.id && /clicked/i.test(String(n.params.text))).length;
    assert.equal(tasks, 0, `${name}: two opens sent twice are two opens (no hot-lead task)`);
    assert.equal(clickNotes, 1, `${name}: one note for the click sent twice`);
  }
});
