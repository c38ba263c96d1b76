/** Small shared pieces: status badges, error and empty states, action buttons with feedback. */
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';

export function Badge({ kind, children }: { kind: string; children: ComponentChildren }) {
  return <span class={`badge ${kind}`}>{children}</span>;
}

export function ErrorNote({ error }: { error: string | null }) {
  return error ? <p class="error" role="alert">{error}</p> : null;
}

export function Table({ caption, children, testid }: { caption: string; children: ComponentChildren; testid?: string }) {
  return (
    <div class="table-wrap" tabindex={0} role="region" aria-label={caption}>
      <table data-testid={testid}>
        <caption class="sr-only">{caption}</caption>
        {children}
      </table>
    </div>
  );
}

/**
 * A button that runs an action, shows that it runs, and says how it went (in a live region, so
 * screen readers hear it too).
 */
export function ActionButton({ label, run, confirm, kind, testid, disabled }: { label: string; run: () => Promise<string>; confirm?: string; kind?: string; testid?: string; disabled?: boolean }) {
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<{ ok: boolean; text: string } | null>(null);
  const click = async () => {
    if (confirm && !window.confirm(confirm)) return;
    setBusy(true);
    try {
      setResult({ ok: true, text: await run() });
    } catch (err) {
      setResult({ ok: false, text: err instanceof Error ? err.message : String(err) });
    } finally {
      setBusy(false);
    }
  };
  return (
    <span class="action">
      <button type="button" class={kind ?? ''} disabled={busy || disabled} onClick={() => void click()} data-testid={testid}>
        {busy ? `${label}…` : label}
      </button>
      <span role="status" class={result ? (result.ok ? 'ok-text' : 'error-text') : ''}>{result?.text ?? ''}</span>
    </span>
  );
}

export function stateKind(state: string): string {
  switch (state) {
    case 'done':
    case 'ok':
    case 'routed':
      return 'ok';
    case 'dead':
    case 'failed':
    case 'error':
      return 'error';
    case 'discarded':
      return 'muted';
    default:
      return 'warn';
  }
}
