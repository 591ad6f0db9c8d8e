// The ES module entry point: the same binding as `require('cibmtr-fhir')`, loaded once by the
// generated CommonJS loader (index.js), whose named exports Node detects statically.
export * from './index.js'
export { default } from './index.js'
