/** Hash routing (`#/events?kind=email.opened`): views are links, and no server route is needed. */
import { useEffect, useState } from 'preact/hooks';

export interface Route {
  path: string;
  query: URLSearchParams;
}

function current(): Route {
  const hash = window.location.hash.startsWith('#/') ? window.location.hash.slice(1) : '/overview';
  const i = hash.indexOf('?');
  return { path: i < 0 ? hash : hash.slice(0, i), query: new URLSearchParams(i < 0 ? '' : hash.slice(i + 1)) };
}

export function useHashRoute(): Route {
  const [route, setRoute] = useState(current);
  useEffect(() => {
    // Only `#/...` is a route; an in-page anchor (`#main`) is not.
    const on = () => {
      if (window.location.hash.startsWith('#/') || window.location.hash === '') setRoute(current());
    };
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}

export function go(path: string): void {
  window.location.hash = path;
}
