#!/bin/sh
echo stand-in
