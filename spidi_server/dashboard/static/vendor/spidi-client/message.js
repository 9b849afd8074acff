// The JSON body of a STOMP MESSAGE (every Spidi message is a JSON object); null when it is not.

/** @param {{body: string}} message */
export function parseBody(message) {
  try {
    const body = JSON.parse(message.body);
    return body !== null && typeof body === 'object' ? body : null;
  } catch {
    return null;
  }
}

/** Room codes as the server takes them (docs/protocol.md, HELLO). */
export const ROOM_CODE = /^[A-Za-z0-9_.:-]{1,64}$/;
