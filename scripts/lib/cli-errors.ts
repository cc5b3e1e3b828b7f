// What the command-line tools say of a failure: one line the operator can act on, not a stack trace.
import { ConfigError } from '#src/config.ts'
import { isDataFolderError } from '#src/db/embedded.ts'
import { isDatabaseUnavailable } from '#src/db/failures.ts'

/**
 * The one line for an error an operator causes or can fix (its message says what to do), or undefined for
 * a fault of the tool itself, whose stack trace is the useful part. `clearToo` adds a tool's own kinds.
 */
export function clearErrorLine (error: unknown, clearToo: (error: Error) => boolean = () => false): string | undefined {
  if (!(error instanceof Error)) return undefined
  const code = (error as { code?: unknown }).code
  if (error instanceof ConfigError || isDataFolderError(error) ||
    (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) || clearToo(error)) {
    return error.message
  }
  // Unreachable, or gone mid-command (the running service it went through stopped, found by an outside
  // probe): Prisma's message is a code frame, its last line the driver's reason.
  if (isDatabaseUnavailable(error)) {
    const reason = error.message.trim().split('\n').at(-1)?.trim() ?? ''
    return `the database did not answer (${reason}): nothing more was done; try again once it is up (a change answered before this one stands)`
  }
  return undefined
}
