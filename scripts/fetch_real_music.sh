#!/bin/sh
# Fetch real recorded music from free Debian packages into DIR/<package>/ (OGG/MP3/... files
# from the packages' music folders only; sound effects are left out). No audio is committed:
# DIR should lie outside the repository. Needs apt (package lists present) and dpkg.
#
# NEVER add wesnoth-*, hyperrogue-music, warzone2100-music, fb-music-high, drascula-music,
# asc-music, nexuiz-music or singularity-music: they are reserved for an independent
# acceptance evaluation (encoder/MODEL_CARD.md).
#
# Usage: scripts/fetch_real_music.sh DIR [PACKAGE ...]   (default: all the allowed packages)
set -eu
if [ $# -lt 1 ]; then
    echo "usage: scripts/fetch_real_music.sh DIR [PACKAGE ...]" >&2
    exit 2
fi
dest=$(realpath -m "$1")
shift
# Not in the default list: boswars-data and neverball-data ship no music folder, and openarena-data
# keeps none (checked 2026-12-03). Pingus' tracker modules (.it/.s3m) are copied but do not decode;
# the benchmark skips them.
#
# Held out of training (encoder.corpus_real.HELDOUT_SOURCES, the likeness benchmark's): widelands-data,
# openclonk-data, xmoto-data, lincity-ng-data, pingus-data and both fretsonfire-songs-* packs. Every
# other package below is TRAINING-only. The second group (session 11) added 16 training sources; the
# shipped timbre model (`cadenza timbre fit --audio DIR`) is fitted on all the training sources of
# this default list, so the list is part of what reproduces it: change it and refit.
# openarena-088-data and ufoai-music keep their music in .pk3 archives (zip files; unpacked below).
pkgs=${*:-"widelands-data supertux-data supertuxkart-data hedgewars-data freedroidrpg-data megaglest-data
openclonk-data lincity-ng-data xmoto-data pingus-data fretsonfire-songs-muldjord fretsonfire-songs-sectoid
naev-data ufoai-music flare-game extremetuxracer-data btanks-data scorched3d-data openarena-088-data
lordsawar-data trackballs-data ardentryst glob2-data amoebax-data plee-the-bear-data warmux-data
colobot-common-sounds mu-cade-data"}
for p in $pkgs; do
    case "$p" in
        wesnoth*|hyperrogue-music|warzone2100-music|fb-music-high|drascula-music|asc-music|nexuiz-music|singularity-music)
            echo "refusing $p: reserved for the independent acceptance evaluation" >&2
            exit 2 ;;
    esac
done
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for p in $pkgs; do
    if [ -d "$dest/$p" ] && [ -n "$(ls -A "$dest/$p")" ]; then
        echo "$p: already there"
        continue
    fi
    echo "$p: downloading"
    (cd "$tmp" && apt-get download -q "$p" >/dev/null) || { echo "$p: apt-get download failed" >&2; continue; }
    dpkg -x "$tmp"/"$p"_*.deb "$tmp/x"
    # Quake-engine games keep their music in .pk3 archives (zip): unpack their music/ folders beside them.
    find "$tmp/x" -type f -iname '*.pk3' | while IFS= read -r a; do
        python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
z.extractall(sys.argv[2], [n for n in z.namelist() if n.lower().startswith("music/")])' "$a" "$a.d"
    done
    mkdir -p "$dest/$p"
    # Music folders only: a "music", "songs" or "mus" folder (fretsonfire: songs/<song>/; openclonk: Music.ocg/;
    # btanks: tunes/; glob2: zik/). plee-the-bear's music/sequencer/ holds stems of its bonus tune (the same
    # passage again), so it is left out.
    find "$tmp/x" -type f \( -iname '*.ogg' -o -iname '*.mp3' -o -iname '*.flac' -o -iname '*.opus' -o -iname '*.wav' -o -iname '*.it' -o -iname '*.xm' -o -iname '*.mod' -o -iname '*.s3m' \) |
        grep -Ei '/(music|musics|songs|mus|soundtrack|music\.ocg|tunes|zik)/' | grep -v '/sequencer/' |
        while IFS= read -r f; do
            rel=${f#"$tmp/x/"}
            out="$dest/$p/$(printf '%s' "$rel" | tr '/' '_')"
            cp "$f" "$out"
        done
    echo "$p: $(ls "$dest/$p" | wc -l) files"
    rm -rf "$tmp/x" "$tmp"/*.deb
done
