# Turns a file into a C header holding it as a NUL-terminated char array
# (an array, not a string literal: literals over 4095 bytes are not
# portable C and -Wpedantic says so).
# Usage: cmake -DIN=file -DOUT=header -DNAME=symbol -P embed.cmake
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
get_filename_component(name "${IN}" NAME)
file(WRITE "${OUT}" "/* Generated from ${name}; do not edit. */\nstatic const char ${NAME}[] = {\n${bytes}0x00};\n")
