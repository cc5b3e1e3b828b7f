// Preloaded (node --import) into a service or migrator process by the fault tests. The statement that
// matches BATTRA_TEST_PAUSE_AT (a regular expression), at its BATTRA_TEST_PAUSE_OCCURRENCE-th match
// (default 1), is never sent and never answered; the process says so on stderr and waits there, so
// that a test can kill it at exactly that point (inside a migration's or the seed's transaction).
// Plain JavaScript: it loads before tsx does.
import pg from 'pg'

const pattern = new RegExp(process.env.BATTRA_TEST_PAUSE_AT ?? '(?!)')
let remaining = Number(process.env.BATTRA_TEST_PAUSE_OCCURRENCE ?? 1)
const query = pg.Client.prototype.query

pg.Client.prototype.query = function (config, ...rest) {
  const text = typeof config === 'string' ? config : config?.text
  if (typeof text === 'string' && pattern.test(text) && --remaining === 0) {
    process.stderr.write(`PAUSED AT: ${text.slice(0, 120).replace(/\s+/g, ' ')}\n`)
    return new Promise(() => {})
  }
  return query.call(this, config, ...rest)
}
