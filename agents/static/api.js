// The JSON API (docs/desktop.md): same-origin fetch with the session cookie; POST/PATCH/DELETE carry the
// session's CSRF token (X-CSRF-Token, from <meta name="csrf-token">). Errors become ApiError with the
// server's message and the field it names.
import {label, t} from './page.js';

const csrf = document.querySelector('meta[name="csrf-token"]')?.getAttribute('content') || '';

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }

  /** The route is not there (an older engine, or a part still starting): the page degrades, no alarm. */
  get missing() {
    return this.status === 404 && /not found/i.test(this.message);
  }
}

export async function api(method, path, body) {
  const headers = {Accept: 'application/json'};
  const init = {method, headers, credentials: 'same-origin', cache: 'no-store'};
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, t('err_network'));
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.status === 401) {
    window.location.assign('/login?next=' + encodeURIComponent(window.location.pathname + window.location.search));
    throw new ApiError(401, t('err_login'));
  }
  if (!response.ok) {
    const message = data && typeof data.error === 'string' ? data.error : `HTTP ${response.status}`;
    throw new ApiError(response.status, message, data && data.field);
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body = {}) => api('POST', path, body);
export const patch = (path, body = {}) => api('PATCH', path, body);
export const del = (path) => api('DELETE', path);

/** A sentence for the operator about a failed request. */
export function errorText(error) {
  if (!(error instanceof ApiError)) return t('err_generic', {message: String(error && error.message || error)});
  if (error.status === 0) return t('err_network');
  if (error.missing) return t('err_unavailable');
  if (error.status === 403) return t('err_forbidden', {message: error.message});
  const field = error.field ? ` (${label('field_', error.field)})` : '';
  return `${error.message}${field}`;
}
