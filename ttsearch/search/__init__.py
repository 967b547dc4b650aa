"""The search core: request and result values, the strategies (pure state machines), selection, grading and the
ready-queue scheduler.

It imports no Ray, torch or vLLM (a test pins it): everything here runs on scripted fakes in milliseconds. May
import `ttsearch.config` and `ttsearch.errors`.
"""
