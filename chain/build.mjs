// Compile chain/EIP3009Token.sol with the pinned npm solc and write tests/fixtures/EIP3009Token.json
// (ABI, creation and runtime bytecode, the compiler and the source's sha256), so the tests need no
// compiler at run time.
//
//   npm ci --prefix tests/chaintools     # once: installs solc (and anvil)
//   node chain/build.mjs                 # rebuild the fixture after editing the contract
//   node chain/build.mjs --check         # exit 1 if the committed fixture is not this source's build

import { createHash } from "node:crypto";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const SOURCE_NAME = "EIP3009Token.sol";
const CONTRACT = "EIP3009Token";
const sourcePath = join(repo, "chain", SOURCE_NAME);
const fixturePath = join(repo, "tests", "fixtures", `${CONTRACT}.json`);

let solc;
try {
  solc = createRequire(join(repo, "tests", "chaintools", "package.json"))("solc");
} catch {
  console.error("solc is not installed: run `npm ci --prefix tests/chaintools` first");
  process.exit(2);
}

const source = readFileSync(sourcePath, "utf8");
// Fixed settings: the same source always gives the same bytecode. Cancun keeps the code runnable
// on any current node (anvil's default hardfork is newer).
const settings = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  outputSelection: { [SOURCE_NAME]: { [CONTRACT]: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};
const input = { language: "Solidity", sources: { [SOURCE_NAME]: { content: source } }, settings };
const output = JSON.parse(solc.compile(JSON.stringify(input)));

const diagnostics = output.errors ?? [];
for (const d of diagnostics) console.error(d.formattedMessage ?? d.message);
if (diagnostics.some((d) => d.severity === "error")) process.exit(1);

const contract = output.contracts[SOURCE_NAME][CONTRACT];
const artifact = {
  contractName: CONTRACT,
  source: `chain/${SOURCE_NAME}`,
  sourceSha256: createHash("sha256").update(source).digest("hex"),
  compiler: { name: "solc", version: solc.version(), settings: { optimizer: settings.optimizer, evmVersion: settings.evmVersion } },
  abi: contract.abi,
  bytecode: `0x${contract.evm.bytecode.object}`,
  deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
};
const text = `${JSON.stringify(artifact, null, 2)}\n`;

if (process.argv.includes("--check")) {
  let current = "";
  try {
    current = readFileSync(fixturePath, "utf8");
  } catch {
    // missing: reported below
  }
  if (current !== text) {
    console.error(`${fixturePath} is stale or missing: run \`node chain/build.mjs\` and commit it`);
    process.exit(1);
  }
  console.log(`${fixturePath} is up to date (solc ${solc.version()})`);
} else {
  mkdirSync(dirname(fixturePath), { recursive: true });
  writeFileSync(fixturePath, text);
  const size = (artifact.deployedBytecode.length - 2) / 2;
  console.log(`wrote ${fixturePath}: ${size} bytes of runtime code (solc ${solc.version()})`);
}
