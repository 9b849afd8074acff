// spidi-client: the JavaScript SDK of the Spidi presence server (docs/protocol.md).
export { SpidiClient } from './client.js';
export { SpidiError, CLIENT_CODES } from './errors.js';
export {
  backoffDelay,
  closeVerdict,
  DEFAULT_GRACE_PERIOD_MS,
  FATAL_HELLO_CODES,
  RECONNECT_BASE_MS,
  RECONNECT_CAP_MS,
} from './policy.js';
export { RosterState, AlertState } from './state.js';
