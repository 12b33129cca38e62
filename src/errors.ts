/**
 * The one catalogue of errors Slipway reports to clients. Each has a stable code that
 * scripts may match on, an HTTP status, and a message that says what could not be done
 * and why. Nothing else ever reaches a client: unknown errors become a bare 500.
 */

export const ErrorCodes = {
  BAD_REQUEST: { status: 400, message: "The request is malformed" },
  VALIDATION: { status: 400, message: "The request body is not valid" },
  BODY_TOO_LARGE: { status: 413, message: "The request body is too large" },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: "The request body must be JSON" },
  UNAUTHENTICATED: { status: 401, message: "Sign in first: no valid session or API token" },
  LOGIN_FAILED: { status: 401, message: "Cannot sign in: wrong username or password" },
  ACCOUNT_LOCKED: { status: 423, message: "Cannot sign in: the account is locked after repeated failures" },
  PASSWORD_CHANGE_REQUIRED: { status: 403, message: "Change the one-time password before doing anything else" },
  RATE_LIMITED: { status: 429, message: "Too many requests; try again later" },
  FORBIDDEN: { status: 403, message: "Not allowed: your role lacks the permission" },
  OUT_OF_SCOPE: { status: 403, message: "Not allowed: the object is outside your security scopes" },
  NOT_FOUND: { status: 404, message: "Not found" },
  METHOD_NOT_ALLOWED: { status: 405, message: "Method not allowed" },
  CONFLICT: { status: 409, message: "Conflicts with an existing object" },
  RANGE_NOT_SATISFIABLE: { status: 416, message: "The requested range is outside the content" },
  IN_USE: { status: 409, message: "Cannot delete: the object is still referenced" },
  TASK_SEQUENCE_INVALID: { status: 422, message: "The task sequence document is not valid" },
  RULE_INVALID: { status: 422, message: "The collection rule is not valid" },
  WEAK_PASSWORD: { status: 422, message: "The password is too weak" },
  ENROLLMENT_REFUSED: { status: 401, message: "Cannot enroll: the credential is not valid for this machine" },
  PXE_PASSWORD_REQUIRED: { status: 401, message: "Cannot enroll: this site requires the PXE password" },
  PXE_PASSWORD_LOCKED: { status: 429, message: "Cannot enroll: too many wrong PXE passwords; wait up to 15 minutes and try again" },
  CERTIFICATE_REQUIRED: { status: 401, message: "A valid device certificate is required" },
  DEVICE_BLOCKED: { status: 403, message: "The device or its certificate is blocked" },
  NOT_YOUR_RESOURCE: { status: 403, message: "Not allowed: that belongs to another device" },
  ASSURANCE_TOO_LOW: { status: 403, message: "Not allowed: this enrollment's assurance is too low; enroll with the PXE password, an administrator's approval or media" },
  CSR_INVALID: { status: 400, message: "The certificate request is not valid" },
  INTERNAL: { status: 500, message: "Internal error" },
  UNAVAILABLE: { status: 503, message: "Cannot answer now: a service this request needs is unreachable; try again later" },
  QUOTA_EXCEEDED: { status: 507, message: "Cannot store it: a quota or the free space of the store would be exceeded" },
  DP_REMOVED: { status: 410, message: "This distribution point serves nothing: its site removed it or revoked its certificate; an administrator must enroll it again" },
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

/** An expected failure with a stable code; the API turns it into `{ code, message, details }`. */
export class SlipwayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: unknown;

  constructor(code: ErrorCode, message?: string, details?: unknown) {
    super(message ?? ErrorCodes[code].message);
    this.name = "SlipwayError";
    this.code = code;
    this.status = ErrorCodes[code].status;
    this.details = details;
  }

  toJSON(): { code: string; message: string; details: unknown } {
    return { code: `SLIPWAY_${this.code}`, message: this.message, details: this.details ?? null };
  }
}
