/**
 * `kommo-sync demo --json`, as a newcomer (or a script) runs it: both directions deliver, nothing
 * fails, the rate limit holds.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { it } from 'node:test';
import { promisify } from 'node:util';
import type { DemoSummary } from '../../src/cli/demo.js';
import { BIN } from './cli.js';


it('demo --duration 10 --json: deliveries in both directions for every destination, none failed', { timeout: 120_000 }, async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [BIN, 'demo', '--duration', '10', '--json'], { timeout: 100_000 });
  const s = JSON.parse(stdout) as DemoSummary;
  assert.ok(s.scenario.leadsCreated > 0 && s.scenario.stageChanges > 0);
  assert.ok(s.directions.kommoToTools > 0, 'Kommo -> tools');
  assert.ok(s.directions.toolsToKommo > 0, 'tools -> Kommo');
  for (const [dest, c] of Object.entries(s.deliveries)) {
    assert.ok(c.ok > 0, `${dest} delivered something`);
    assert.equal(c.failed, 0, `${dest} failed nothing`);
  }
  assert.ok(Object.keys(s.deliveries).some((d) => d.endsWith('/customerio')), 'Customer.io took part');
  assert.equal(s.failed, 0);
  assert.equal(s.queue.pending, 0, 'drained at the end');
  assert.ok(s.kommo.notes > 0);
  assert.ok(s.kommo.maxRequestsPerSecond <= 7);
});
