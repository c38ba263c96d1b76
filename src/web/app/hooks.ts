/** Data loading for a section: fetch, refetch when the live overview says something changed. */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { onOverview } from './api.js';

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  loading: boolean;
  reload(): void;
}

/**
 * Loads `fetcher()` now and whenever `deps` change; with `live`, again each time the overview's
 * version changes (something was received, delivered or dead-lettered).
 */
export function useLoad<T>(fetcher: () => Promise<T>, deps: unknown[], live = true): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const seq = useRef(0);
  const fetchRef = useRef(fetcher);
  fetchRef.current = fetcher;
  const reload = useCallback(() => {
    const mine = ++seq.current;
    setLoading(true);
    fetchRef.current().then(
      (d) => {
        if (mine !== seq.current) return;
        setData(d);
        setError(null);
        setLoading(false);
      },
      (err: unknown) => {
        if (mine !== seq.current) return;
        setError(err instanceof Error ? err.message : String(err));
        setLoading(false);
      },
    );
  }, []);
  useEffect(reload, deps);
  const version = useRef<string | null>(null);
  useEffect(() => {
    if (!live) return undefined;
    return onOverview((o) => {
      if (version.current !== null && version.current !== o.version) reload();
      version.current = o.version;
    });
  }, [live]);
  return { data, error, loading, reload };
}
