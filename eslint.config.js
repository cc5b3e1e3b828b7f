import neostandard from 'neostandard'

export default neostandard({
  ts: true,
  ignores: ['dist/**', 'src/generated/**', 'bench-results/**', '.data/**', '.tap/**']
})
