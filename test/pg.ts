/**
 * PostgreSQL for tests: TEST_DATABASE_URL (default the local server). Tests that need it run when it
 * is reachable, skip with a clear message when it is not, and fail instead when REQUIRE_POSTGRES=1
 * (CI sets it, so CI can never pass by skipping them).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';

export const PG_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** null when reachable, else why not. */
export async function postgresUnreachable(url = PG_URL): Promise<string | null> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await c.connect();
    await c.query('SELECT 1');
    return null;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  } finally {
    await c.end().catch(() => {});
  }
}

/** Registers `body` as a test, or a skip/failure explaining why PostgreSQL is not there. */
export async function pgTest(name: string, body: () => Promise<void>, timeout = 180_000): Promise<void> {
  const why = await postgresUnreachable();
  if (why === null) test(name, { timeout }, body);
  else if (process.env.REQUIRE_POSTGRES === '1') test(name, () => assert.fail(`PostgreSQL not reachable at ${PG_URL} (${why}) and REQUIRE_POSTGRES=1`));
  else test(name, (t) => t.skip(`PostgreSQL not reachable at ${PG_URL}; set TEST_DATABASE_URL`));
}

/** A fresh schema in the test database: its URL (`?schema=`) and a dispose that drops it. */
export async function freshSchema(prefix = 'ks_test'): Promise<{ url: string; dispose(): Promise<void> }> {
  const schema = `${prefix}_${Math.random().toString(36).slice(2, 10)}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.end();
  const url = new URL(PG_URL);
  url.searchParams.set('schema', schema);
  return {
    url: url.toString(),
    async dispose() {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c.end();
    },
  };
}
