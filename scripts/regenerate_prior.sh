#!/usr/bin/env bash
# Regenerate the router prior shipped in the package (hyper_ls_backend/priors/default.json)
# from both development sets: MT-Bench (GPT-4 in both orders) and PRD (a panel of five
# judges, each in both orders, learned from every judge's view). The artifact holds model
# parameters and summary statistics (length quantiles, feature means), never data rows.
#   scripts/regenerate_prior.sh [DATA_DIR]   (default: $HYPER_DATA_DIR or ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir="${1:-${HYPER_DATA_DIR:-../shared/data}}"
.venv/bin/hyper-ls fit "$data_dir/mtbench_human_gpt4.jsonl" "$data_dir/prd_vicuna80_panel.jsonl" \
    --strategy judge-signals --out hyper_ls_backend/priors/default.json
