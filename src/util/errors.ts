/**
 * An error caused by the user's input (a flag, a file, a checkpoint). The CLI prints its
 * message on one line and exits non-zero, without a stack trace.
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}
