/**
 * The demo's story, played on the simulators: leads are created and move through the pipeline in
 * Kommo (some are won or lost); the marketing tools answer with signed opens, clicks, unsubscribes
 * and bounces for the people kommo-sync synced to them. A fixed seed makes runs comparable.
 */
import type { DestinationSimulator } from '../destinations/types.js';
import type { World } from './world.js';

export interface ScenarioCounts {
  leadsCreated: number;
  stageChanges: number;
  won: number;
  lost: number;
  engagement: Record<'opened' | 'clicked' | 'unsubscribed' | 'bounced', number>;
  engagementRejected: number;
}

export type ScenarioListener = (line: string) => void;

const FIRST = ['Ann', 'Boris', 'Carla', 'Dmitri', 'Elena', 'Farid', 'Grace', 'Hugo', 'Ines', 'Jonas', 'Kira', 'Luis'];
const LAST = ['Lee', 'Novak', 'Silva', 'Ivanov', 'Garcia', 'Khan', 'Hopper', 'Martin', 'Costa', 'Berg', 'Sato', 'Diaz'];
const INDUSTRIES = ['SaaS', 'E-commerce', 'Healthcare', 'Finance', 'Education'];
const OPEN_STAGES = ['Qualified', 'Demo scheduled', 'Proposal sent', 'Negotiation'];

/** Small deterministic PRNG (mulberry32): the same story every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Scenario {
  readonly counts: ScenarioCounts = { leadsCreated: 0, stageChanges: 0, won: 0, lost: 0, engagement: { opened: 0, clicked: 0, unsubscribed: 0, bounced: 0 }, engagementRejected: 0 };
  private readonly random = rng(42);
  private readonly leads: Array<{ id: number; email: string; name: string; stage: number }> = [];
  private tick = 0;

  constructor(
    private readonly world: World,
    private readonly serviceUrl: string,
    private readonly say: ScenarioListener,
  ) {}

  /** One step of the story (the demo calls it about every 700 ms). */
  async step(): Promise<void> {
    const k = this.world.kommo;
    this.tick++;
    if (this.leads.length < 4 || this.random() < 0.45) this.createLead();
    const open = this.leads.filter((l) => l.stage < OPEN_STAGES.length);
    if (open.length && this.random() < 0.8) {
      // The oldest open deals move on first, as in a real pipeline (and the story reaches wins sooner).
      const lead = open[Math.floor(this.random() * Math.min(3, open.length))]!;
      // Deals close from the later stages too, so even a short demo shows wins and losses.
      if (lead.stage >= 2 && this.random() < (lead.stage === OPEN_STAGES.length - 1 ? 0.7 : 0.35)) {
        const won = this.random() < 0.6;
        k.moveLead(lead.id, won ? 142 : 143);
        lead.stage = OPEN_STAGES.length;
        this.counts[won ? 'won' : 'lost']++;
        this.say(`Kommo   lead #${lead.id} ${lead.name} is ${won ? 'WON' : 'lost'}`);
      } else {
        const next = Math.min(lead.stage + 1, OPEN_STAGES.length - 1);
        lead.stage = next;
        k.moveLead(lead.id, k.status(OPEN_STAGES[next]!).id);
        this.say(`Kommo   lead #${lead.id} ${lead.name} moved to "${OPEN_STAGES[next]}"`);
      }
      this.counts.stageChanges++;
    }
    await k.flushWebhooks();
    if (this.tick % 2 === 0) await this.engage();
  }

  private createLead(): void {
    const k = this.world.kommo;
    const n = this.counts.leadsCreated;
    const first = FIRST[n % FIRST.length]!;
    const last = LAST[Math.floor(n / FIRST.length) % LAST.length]!;
    const email = `${first}.${last}${n >= FIRST.length * LAST.length ? n : ''}@demo.example`.toLowerCase();
    const industry = INDUSTRIES[Math.floor(this.random() * INDUSTRIES.length)]!;
    const contact = k.createContact({ name: `${first} ${last}`, email, fields: { 'Email opt-in': true } });
    const price = 1000 + Math.floor(this.random() * 40) * 500;
    const lead = k.createLead({ name: `${first}'s ${industry} deal`, price, contactIds: [contact.id], fields: { Industry: industry, Source: 'website' }, statusId: k.status('Qualified').id });
    this.leads.push({ id: lead.id, email, name: `${first} ${last}`, stage: 0 });
    this.counts.leadsCreated++;
    this.say(`Kommo   new lead #${lead.id} ${first} ${last} (${industry}, ${price})`);
  }

  /** Engagement comes back only for people a tool has heard of: the loop is real, not staged. */
  private async engage(): Promise<void> {
    for (const [name, v] of this.world.vendors) {
      const sim: DestinationSimulator = v.sim;
      if (!sim.sendEngagement) continue;
      const heard = new Set(sim.items.filter((i) => i.ok).map((i) => i.person));
      const known = this.leads.filter((l) => heard.has(l.email));
      if (!known.length) continue;
      const person = known[Math.floor(this.random() * known.length)]!;
      const roll = this.random();
      // Opens come in threes now and then, so the hot-lead rule fires.
      const kinds: Array<'opened' | 'clicked' | 'unsubscribed' | 'bounced'> = roll < 0.25 ? ['opened', 'opened', 'opened'] : roll < 0.55 ? ['opened'] : roll < 0.8 ? ['clicked'] : roll < 0.93 ? ['unsubscribed'] : ['bounced'];
      for (const kind of kinds) {
        const status = await sim.sendEngagement(this.world.vendorWebhookUrl(this.serviceUrl, name), kind, person.email, { subject: 'Your proposal from Acme', link: 'https://acme.example/pricing' });
        if (status === 200) this.counts.engagement[kind]++;
        else this.counts.engagementRejected++;
      }
      this.say(`${name.padEnd(7)} ${kinds.length > 1 ? `${kinds.length} x ` : ''}${kinds[0]} by ${person.email}`);
    }
  }
}
