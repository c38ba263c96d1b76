/** Configuration: the effective config (secrets masked), names resolved in Kommo, connections, webhook URLs. */
import type { CheckResponse, ConfigResponse } from '../../http/admin-types.js';
import { get, post } from './api.js';
import { json } from './format.js';
import { useLoad } from './hooks.js';
import { ActionButton, Badge, ErrorNote, Table } from './ui.js';

function Check({ destination }: { destination: string }) {
  return (
    <ActionButton label="Test connection" testid={`check-${destination}`} run={async () => {
      const r = await post<CheckResponse>('/api/check', { destination });
      if (!r.ok) throw new Error(`failed after ${r.ms} ms: ${r.message}`);
      return `ok in ${r.ms} ms: ${r.message}`;
    }} />
  );
}

export function ConfigPage() {
  const c = useLoad(() => get<ConfigResponse>('/api/config'), [], false);
  return (
    <section>
      <h1>Configuration</h1>
      <ErrorNote error={c.error} />
      {c.loading && !c.data ? <p>Reading the config and checking names in Kommo…</p> : null}
      {c.data?.accounts.map((a) => (
        <section key={a.account} class="account">
          <h2>Account {a.account}</h2>
          <p>Kommo <code>{a.kommo.subdomain}</code> at <code>{a.kommo.baseUrl}</code>{' '}
            {a.kommo.loaded ? <Badge kind="ok">stages and fields read</Badge> : <Badge kind="error">not read: {a.kommo.error}</Badge>}{' '}
            <Check destination={`${a.account}/kommo`} /></p>
          <h3>Names in the config, resolved in Kommo</h3>
          {a.names.length === 0 ? <p class="sub">The config names no stage or field.</p> : (
            <Table caption={`Names of account ${a.account}`} testid={`names-${a.account}`}>
              <thead><tr><th scope="col">name</th><th scope="col">where</th><th scope="col">in Kommo</th></tr></thead>
              <tbody>
                {a.names.map((n) => (
                  <tr key={`${n.where}:${n.name}`} class={n.error ? 'row-error' : ''}>
                    <td>{n.name}</td><td><code>{n.where}</code></td>
                    <td>{n.error ? <span class="error-text">{n.error}</span> : n.resolved}</td>
                  </tr>
                ))}
              </tbody>
            </Table>
          )}
          <h3>Destinations</h3>
          <Table caption={`Destinations of account ${a.account}`}>
            <thead><tr><th scope="col">name</th><th scope="col">type</th><th scope="col">enabled</th><th scope="col">webhooks in</th><th scope="col">connection</th></tr></thead>
            <tbody>
              {a.destinations.map((d) => (
                <tr key={d.key}>
                  <th scope="row">{d.name}</th><td>{d.title} <span class="sub">({d.type})</span></td>
                  <td>{d.enabled ? 'yes' : 'no'}</td><td>{d.inbound ? 'yes' : 'no'}</td>
                  <td>{d.enabled ? <Check destination={d.key} /> : '–'}</td>
                </tr>
              ))}
            </tbody>
          </Table>
          <h3>Webhook URLs to paste</h3>
          <ul class="webhooks">
            {a.webhooks.map((w) => (
              <li key={w.source}><strong>{w.title}</strong>: {w.url ? <code class="wrap">{w.url}</code> : null} <span class="sub">{w.hint}</span></li>
            ))}
          </ul>
          <details>
            <summary>Settings of each destination (secrets masked)</summary>
            <pre>{json(Object.fromEntries(a.destinations.map((d) => [d.name, d.settings])))}</pre>
          </details>
        </section>
      ))}
      {c.data ? (
        <>
          <h2>Destination types kommo-sync knows</h2>
          <ul class="registry">{c.data.registry.map((r) => <li key={r.type}>{r.title} <code>{r.type}</code> {r.configured ? <Badge kind="ok">configured</Badge> : <Badge kind="muted">not configured</Badge>}</li>)}</ul>
          <h2>Effective configuration</h2>
          <details><summary>The whole config, defaults filled in, secrets masked</summary><pre data-testid="effective-config">{json(c.data.config)}</pre></details>
        </>
      ) : null}
    </section>
  );
}
