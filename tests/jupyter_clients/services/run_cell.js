// @jupyterlab/services (the library VS Code's Jupyter extension and
// JupyterLab use) against the runtime's /jupyter kernels API, with no
// jupyter_server between them: start a notebook session on a python3 kernel,
// execute cells, interrupt a sleep, restart, shut down. Prints a JSON line
// {"ready": kernel id} once the kernel is up, waits for a line on stdin, then
// prints one JSON line of results.
//
//   node run_cell.js http://127.0.0.1:PORT/jupyter/ TOKEN
//
// The token reaches the server as `Authorization: token ...` on HTTP and, as
// in every non-browser client of this library, as ?token= on the WebSocket.
'use strict';

const { ServerConnection, KernelManager, SessionManager } = require('@jupyterlab/services');
const WebSocket = require('ws');

const [baseUrl, token] = process.argv.slice(2);

// stdout is for our JSON lines; the library logs (console.log) go to stderr.
console.log = console.info = console.debug = (...args) => console.error(...args);

function within(ms, promise, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

// Run one cell: its iopub outputs (stream text by name, execute_result
// text/plain, error ename) and its execute_reply content.
async function execute(kernel, code, onStream) {
  const future = kernel.requestExecute({ code, silent: false, store_history: true });
  const result = { stdout: '', stderr: '', results: [], errors: [] };
  future.onIOPub = msg => {
    const type = msg.header.msg_type;
    if (type === 'stream') {
      result[msg.content.name] += msg.content.text;
      if (onStream) onStream(msg);
    } else if (type === 'execute_result') {
      result.results.push(msg.content.data['text/plain']);
    } else if (type === 'error') {
      result.errors.push(msg.content.ename);
    }
  };
  const reply = await within(60000, future.done, `execute ${JSON.stringify(code)}`);
  result.status = reply.content.status;
  result.execution_count = reply.content.execution_count;
  if (reply.content.status === 'error') result.ename = reply.content.ename;
  return result;
}

async function main() {
  const serverSettings = ServerConnection.makeSettings({ baseUrl, token, WebSocket });
  const kernelManager = new KernelManager({ serverSettings });
  const sessionManager = new SessionManager({ serverSettings, kernelManager });
  const out = {};

  const specs = await within(30000, ServerConnection.makeRequest(
    `${baseUrl.replace(/\/$/, '')}/api/kernelspecs`, {}, serverSettings).then(r => r.json()), 'kernelspecs');
  out.kernelspecs = Object.keys(specs.kernelspecs).sort();

  const session = await within(60000, sessionManager.startNew({
    path: 'services.ipynb', type: 'notebook', name: 'services.ipynb', kernel: { name: 'python3' },
  }), 'session start');
  const kernel = session.kernel;
  out.kernel_id = kernel.id;
  out.kernel_name = kernel.name;
  const info = await within(30000, kernel.info, 'kernel_info');
  out.language = info.language_info.name;

  // Say which kernel, then wait for a line on stdin: the test attaches a
  // spin client to the kernel's session before any cell runs.
  process.stdout.write(JSON.stringify({ ready: kernel.id }) + '\n');
  await within(60000, new Promise(resolve => process.stdin.once('data', resolve)), 'go-ahead on stdin');
  process.stdin.pause();

  out.cell = await execute(kernel, "print(6*7)\nimport sys; print('warn', file=sys.stderr)\n'spin' * 2");
  out.failing = await execute(kernel, '1/0');
  out.selected_protocol = kernel._selectedProtocol || '';

  // Interrupt a sleep once it has printed: the reply is a KeyboardInterrupt.
  let started;
  const printed = new Promise(resolve => { started = resolve; });
  const sleeping = execute(kernel, "import time\nprint('zz', flush=True)\ntime.sleep(60)", () => started());
  await within(30000, printed, 'sleep start');
  await within(30000, kernel.interrupt(), 'interrupt');
  out.interrupted = await sleeping;

  // Restart: the kernel comes back with nothing defined.
  await execute(kernel, 'x = 1');
  await within(60000, kernel.restart(), 'restart');
  out.after_restart = await execute(kernel, 'x');

  await within(30000, session.shutdown(), 'shutdown');
  const left = await within(30000, ServerConnection.makeRequest(
    `${baseUrl.replace(/\/$/, '')}/api/kernels/${kernel.id}`, {}, serverSettings), 'kernel after shutdown');
  out.after_shutdown_status = left.status;
  sessionManager.dispose();
  kernelManager.dispose();
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().then(() => process.exit(0), err => {
  // The token can be in a WebSocket URL an error names.
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`.split(token).join('<token>'));
  process.exit(1);
});
