#!/usr/bin/env node
// CheckEligibility and OpenEntry from the command line, like the Python `aftersales check|open`:
// the response as JSON on stdout, or a failed call's status and decoded details as JSON on
// stderr, with the Python command line's exit codes (client/__main__.py):
//
//   0  done
//   1  refused: the request or the rules (INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS)
//   2  bad command line
//   3  not found (NOT_FOUND, OUT_OF_RANGE)
//   4  the caller is not authenticated or not allowed (UNAUTHENTICATED, PERMISSION_DENIED)
//   5  the server could not be reached or did not answer in time (UNAVAILABLE,
//      DEADLINE_EXCEEDED): it may have done it or not; sending the same request again is safe
//   6  anything else (INTERNAL, CANCELLED, ABORTED...; or a bug of this client, with its stack)
//
//   node cli.js [--address HOST:PORT] [--token TOKEN] check ORDER_ID [OPERATOR_ID]
//   node cli.js [--address HOST:PORT] [--token TOKEN] open ORDER_ID [OPERATOR_ID] [--note TEXT]
//                                                         [--request-id ID]
//
// `open` is one request, named by its request id: --request-id, else a new one. The same request
// sent again is answered from the server's record and done once; `open` run again without it is
// a new request. So a failed `open` reports its `request_id`, and when it may have been done or
// not (exit 5 or 6), `retry`: the shell command that sends the same request again, the token read
// from AFTERSALES_TOKEN rather than printed.
//
// With --tls-ca (and the caller's --tls-cert and --tls-key) the channel is TLS (the secure mode).
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { createClient, richError, responseJson } = require('./aftersales');

const USAGE = [
  'usage: cli.js [--address HOST:PORT] [--token TOKEN] [--timeout SECONDS]',
  '              [--tls-ca PEM [--tls-cert PEM --tls-key PEM]]',
  '              check|open ORDER_ID [OPERATOR_ID] [--note TEXT] [--request-id ID]',
].join('\n');

const OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  address: { type: 'string', default: '127.0.0.1:50051' },
  token: { type: 'string' },
  note: { type: 'string', default: '' },
  'request-id': { type: 'string' },
  timeout: { type: 'string', default: '10' },
  'tls-ca': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
};

// A command line that cannot be run as given: its message on stderr, exit 2.
class UsageError extends Error {}

// Seconds above zero and finite: a bad --timeout is the command line's fault (exit 2), not a
// deadline the server missed.
function seconds(option, text) {
  const value = text.trim() === '' ? Number.NaN : Number(text);
  if (Number.isNaN(value)) throw new UsageError(`${option}: not a number of seconds: '${text}'`);
  if (!(value > 0 && Number.isFinite(value))) {
    throw new UsageError(`${option}: must be above zero and finite, not ${text}`);
  }
  return value;
}

// The contents of the file an option names (undefined without one); an unreadable one is a bad
// command line, said in one line.
function contentsOf(option, file) {
  if (file === undefined) return undefined;
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const reason = err.code === 'EISDIR' ? 'it is a folder' : err.message.replace(/^[A-Z]+: /, '').replace(/,.*$/, '');
    throw new UsageError(`cannot read ${option} ${file}: ${reason}`);
  }
}

// The exit code of a failed call's status code; 6 for any other.
const EXIT_CODES = {
  INVALID_ARGUMENT: 1,
  FAILED_PRECONDITION: 1,
  ALREADY_EXISTS: 1,
  NOT_FOUND: 3,
  OUT_OF_RANGE: 3,
  UNAUTHENTICATED: 4,
  PERMISSION_DENIED: 4,
  UNAVAILABLE: 5,
  DEADLINE_EXCEEDED: 5,
};

// What a retry says for a token: a bearer token is nothing to print where logs keep it.
const TOKEN = '"$AFTERSALES_TOKEN"';

// `word` as one word of a POSIX shell command line (as Python's shlex.quote).
function quote(word) {
  if (/^[\w@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, "'\"'\"'")}'`;
}

// The shell command that sends the request of `values` and `positionals` again: every option as
// given, the request id the request was sent with, and the token read from AFTERSALES_TOKEN.
function retryCommand(values, positionals, requestId) {
  const words = ['node', quote(path.relative(process.cwd(), __filename) || __filename)];
  for (const option of ['address', 'timeout', 'tls-ca', 'tls-cert', 'tls-key']) {
    if (values[option] !== undefined) words.push(`--${option}`, quote(values[option]));
  }
  if (values.token !== undefined) words.push('--token', TOKEN);
  const [command, ...rest] = positionals;
  words.push(command);
  if (values.note) words.push('--note', quote(values.note));
  words.push('--request-id', quote(requestId));
  if (rest.some((word) => word.startsWith('-'))) words.push('--');
  words.push(...rest.map(quote));
  return words.join(' ');
}

function call(stub, method, request, deadlineSeconds) {
  // A deadline past what a Date holds is no deadline.
  const end = Date.now() + deadlineSeconds * 1000;
  const deadline = end < 8.64e15 ? new Date(end) : Infinity;
  return new Promise((resolve, reject) => {
    stub[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

// The client of the options: TLS with --tls-ca, and the caller's own certificate with both
// --tls-cert and --tls-key.
function connect(values) {
  if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined)) {
    throw new UsageError('--tls-cert and --tls-key go together: the certificate and its key');
  }
  const tls = {
    rootCerts: contentsOf('--tls-ca', values['tls-ca']),
    certChain: contentsOf('--tls-cert', values['tls-cert']),
    privateKey: contentsOf('--tls-key', values['tls-key']),
  };
  try {
    return createClient(values.address, { token: values.token, ...tls });
  } catch (err) {
    // Files that are no PEM certificate or key, or a key that is not the certificate's.
    throw new UsageError(`the TLS files are not usable: ${err.message}`);
  }
}

async function main(argv) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
  } catch (err) {
    console.error(`${err.message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const [command, orderId, operatorId = ''] = positionals;
  if (!['check', 'open'].includes(command) || orderId === undefined || positionals.length > 3) {
    console.error(USAGE);
    return 2;
  }
  let client;
  let timeout;
  try {
    timeout = seconds('--timeout', values.timeout);
    client = connect(values);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`cli.js: ${err.message}`);
    return 2;
  }
  const [method, request] =
    command === 'check'
      ? ['CheckEligibility', { order_id: orderId, operator_id: operatorId }]
      : [
          'OpenEntry',
          {
            order_id: orderId,
            operator_id: operatorId,
            note: values.note,
            request_id: values['request-id'] ?? crypto.randomUUID(),
          },
        ];
  try {
    const response = await call(client.entry, method, request, timeout);
    console.log(JSON.stringify(responseJson('AfterSalesEntry', method, response), null, 2));
    return 0;
  } catch (err) {
    if (err.code === undefined) throw err;
    const report = richError(err);
    const exitCode = EXIT_CODES[report.code] ?? 6;
    if (command === 'open') {
      report.request_id = request.request_id;
      // It may have been done or not: the same request again, which is done once.
      if (exitCode >= 5) report.retry = retryCommand(values, positionals, request.request_id);
    }
    console.error(JSON.stringify(report, null, 2));
    return exitCode;
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(err);
    process.exitCode = 6;
  },
);
