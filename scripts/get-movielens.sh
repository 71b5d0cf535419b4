#!/usr/bin/env bash
# Builds an item corpus from MovieLens latest-small (671 users, 9,066 movies, 100,004 ratings; GroupLens,
# as shipped in Debian's r-cran-dslabs package) in ringtrain's corpus format:
#   <out>/sequences.txt  one line per user: the movieIds they rated, in rating-time order (ties by movieId)
#   <out>/items.tsv      id key name category: id = key = movieId, name = title (year), category = the FIRST of the
#                        movie's genres ("Action|Adventure" -> "Action"; empty for "(no genres listed)"),
#                        one label per item so category agreement of neighbours is well defined.
# Usage: scripts/get-movielens.sh [OUT_DIR]   (default data/movielens, gitignored)
# Needs: apt-get (downloads r-cran-dslabs without installing it) and Rscript (r-base-core, installed from
# apt when missing). The package's data is an R lazy-load database (data/Rdata.rdb), read with lazyLoad().
# Evaluation protocol (../shared/BENCHMARKS.md section 4): leave-last-10-out per user in time order, i.e.
#   --set data.context=window --set data.eval_fraction=1 --set data.eval_hide_last=10
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/data/movielens}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v Rscript >/dev/null 2>&1; then
  echo "get-movielens: installing r-base-core (Rscript) from apt" >&2
  $SUDO apt-get install -y --no-install-recommends r-base-core >/dev/null \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends r-base-core >/dev/null; }
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"   # apt's _apt user downloads into it
( cd "$WORK" && apt-get download r-cran-dslabs >/dev/null 2>&1 ) \
  || { echo "get-movielens: apt-get download r-cran-dslabs failed (try: apt-get update)" >&2; exit 1; }
dpkg -x "$WORK"/r-cran-dslabs_*.deb "$WORK/pkg"
PKGDIR="$(dirname "$(find "$WORK/pkg" -path '*/dslabs/data/Rdata.rdb' | head -1)")"
[ -n "$PKGDIR" ] && [ -f "$PKGDIR/Rdata.rdb" ] || { echo "get-movielens: no data/Rdata.rdb in the package" >&2; exit 1; }

mkdir -p "$OUT"
Rscript --vanilla - "$PKGDIR/Rdata" "$OUT" <<'RSCRIPT'
args <- commandArgs(trailingOnly = TRUE)
e <- new.env()
invisible(lazyLoad(args[1], envir = e))
ml <- e$movielens
out <- args[2]
ml <- ml[order(ml$userId, ml$timestamp, ml$movieId), ]
lines <- vapply(split(ml$movieId, ml$userId), function(x) paste(x, collapse = " "), character(1))
tmp <- file.path(out, paste0("sequences.txt.tmp.", Sys.getpid()))
writeLines(unname(lines), tmp)
invisible(file.rename(tmp, file.path(out, "sequences.txt")))
items <- ml[!duplicated(ml$movieId), c("movieId", "title", "year", "genres")]
items <- items[order(items$movieId), ]
genres <- as.character(items$genres)
first <- sub("\\|.*$", "", genres)
first[first == "(no genres listed)"] <- ""
title <- gsub("[\t\r\n]", " ", as.character(items$title))
title <- ifelse(is.na(items$year), title, paste0(title, " (", items$year, ")"))
df <- data.frame(id = items$movieId, key = items$movieId, name = title, category = first)
tmp <- file.path(out, paste0("items.tsv.tmp.", Sys.getpid()))
write.table(df, tmp, sep = "\t", quote = FALSE, row.names = FALSE, col.names = TRUE)
invisible(file.rename(tmp, file.path(out, "items.tsv")))
cat(sprintf("movielens: %d users, %d movies, %d ratings -> %s\n", length(lines), nrow(items), nrow(ml), out))
RSCRIPT
