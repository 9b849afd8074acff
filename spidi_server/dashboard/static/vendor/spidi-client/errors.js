// The one error type of the SDK. `code` is a server code from docs/protocol.md section 5
// (ROOM_FULL, UNAVAILABLE, …) or one of the SDK's own, listed in CLIENT_CODES.

/** Codes the SDK itself gives (the server's come from its ERROR messages). */
export const CLIENT_CODES = Object.freeze({
  UNAUTHORIZED: 'UNAUTHORIZED', // the server refused the token at CONNECT (ERROR frame, close 1008)
  CONNECTION_REFUSED: 'CONNECTION_REFUSED', // closed with 1007/1009: this client's traffic is refused
  PROTOCOL: 'PROTOCOL', // an ERROR frame on an established connection (the server closes it next)
  TOKEN: 'TOKEN', // getToken() threw or returned no token
  CLOSED: 'CLOSED', // close() was called while something waited
  LEFT: 'LEFT', // leave() was called while join() waited
});

export class SpidiError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{codeNumber?: number, fatal?: boolean, ref?: string, closeCode?: number}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'SpidiError';
    this.code = code;
    this.codeNumber = extra.codeNumber;
    this.fatal = extra.fatal ?? false;
    this.ref = extra.ref;
    this.closeCode = extra.closeCode;
  }
}
