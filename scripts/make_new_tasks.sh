#!/usr/bin/env bash
# Render the evaluation tasks that no bundled suite (and so no initialization meta-trained on the suites) contains:
# glyph scripts (28x28 gray) and colour tasks (32x32 RGB), one NAME.npz each, plus previews/NAME.png grids.
#
#     bash scripts/make_new_tasks.sh OUT_DIR [--no-install]
#
# Installs the Debian packages they are rendered from (apt-get, as root; --no-install skips that), then runs
# scripts/make_new_task.py for every task and prints one summary line per task (classes, train / test sizes, file
# size). Tasks already in OUT_DIR are rendered again. About 10 minutes on one idle core.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: bash scripts/make_new_tasks.sh OUT_DIR [--no-install]" >&2
    exit 2
fi
out=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The scripts that transfer is measured on first; the other glyph scripts of make_new_task.py are for task pools.
GLYPH_TASKS=(gujarati kannada digits tamil telugu malayalam sinhala khmer lao myanmar tibetan)
COLOUR_TASKS=(emoji-symbols icons-devices icons-status textures-extra)

if [[ "${2:-}" != "--no-install" ]]; then
    apt-get update -q
    # The colour suite's packages (scripts/build_colour_suite.py's docstring), gimp-data-extras and the Noto fonts.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        fonts-noto-core fonts-noto-color-emoji unicode-data gimp-data gimp-data-extras librsvg2-bin \
        breeze-icon-theme elementary-xfce-icon-theme faba-icon-theme tango-icon-theme gnome-icon-theme \
        mate-icon-theme lxde-icon-theme oxygen-icon-theme gnome-icon-theme-gartoon gnome-icon-theme-nuovo \
        gnome-icon-theme-yasis suru-icon-theme numix-icon-theme adwaita-icon-theme >/dev/null
fi

if ! python -c "import fontTools, PIL, numpy" 2>/dev/null; then
    echo "make_new_tasks.sh: error: the rendering needs fonttools, Pillow and numpy in this python; pip install fonttools" >&2
    exit 2
fi
mkdir -p "$out/previews"
summary=()
for name in "${GLYPH_TASKS[@]}"; do
    summary+=("$(python "$here/make_new_task.py" "$name" "$out/$name.npz" --preview "$out/previews/$name.png")")
    echo "${summary[-1]}"
done
for name in "${COLOUR_TASKS[@]}"; do
    summary+=("$(python "$here/make_new_task.py" --colour "$name" "$out/$name.npz" --preview "$out/previews/$name.png")")
    echo "${summary[-1]}"
done
echo
echo "Rendered ${#summary[@]} tasks into $out:"
printf '  %s\n' "${summary[@]}"
