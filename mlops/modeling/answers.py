"""Answer composition for ``rag_model``: a helpful answer written only from the retrieved records.

Kept free of scikit-learn so the serving runtime can import it.
"""

from __future__ import annotations

import re

from mlops.modeling.text import split_list

SRI_LANKA_FACTS = {
    # Country-level facts the place records do not carry.
    "currency": "The currency is the Sri Lankan rupee (LKR); ATMs are common in towns and cards work in most hotels, "
    "but carry cash for tuk-tuks, buses and small shops.",
    "visa": "Most visitors to Sri Lanka need an Electronic Travel Authorization (ETA) before arrival; rules and fees "
    "depend on your nationality, so check the official Department of Immigration and Emigration website.",
}


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?[.!?])(\s|$)", text.strip())
    return match.group(1) if match else text.strip()


def _months(record: dict) -> str:
    months = split_list(record.get("best_months", ""))
    return ", ".join(months)


def _describe(doc: dict) -> str:
    record = doc["record"]
    parts = [f"{doc['name']} ({doc['location']}): {_first_sentence(record['description'])}"]
    if doc["source"] == "destinations":
        parts.append(f"Best months: {_months(record)}.")
        parts.append(f"Typical cost: about ${record['avg_daily_cost_usd']} a day ({record['budget_level']}).")
    else:
        parts.append(f"Best time: {record['best_time']}.")
        parts.append(f"Getting there: {record['how_to_get_there']}")
    return " ".join(parts)


def _field_answer(doc: dict, intent: str) -> str | None:
    """The fact the intent asks for, from one record, or None when the record does not hold it."""
    record, name, is_sl = doc["record"], doc["name"], doc["source"] == "sri_lanka"
    if intent == "best_time_to_visit":
        return (
            f"Best time to visit {name}: {record['best_time']}."
            if is_sl
            else (f"The best months to visit {name} are {_months(record)} ({record['climate']}).")
        )
    if intent == "weather":
        return f"{name}: {record['best_time']}." if is_sl else f"Climate in {name}: {record['climate']}."
    if intent == "budget_planning" and not is_sl:
        return f"{name} costs about ${record['avg_daily_cost_usd']} a day for one traveller ({record['budget_level']})."
    if intent == "transportation":
        return (
            f"Getting to {name}: {record['how_to_get_there']}"
            if is_sl
            else (
                f"Getting around {name}: {record.get('getting_around', '')}" if record.get("getting_around") else None
            )
        )
    if intent == "food_and_cuisine" and record.get("local_dishes"):
        return f"Dishes to try in {name}: {', '.join(split_list(record['local_dishes']))}."
    if intent == "safety_and_health" and record.get("safety_notes"):
        return f"Safety in {name}: {record['safety_notes']}"
    if intent == "currency_exchange":
        if is_sl:
            return SRI_LANKA_FACTS["currency"]
        return f"The currency in {name} is the {record['currency']}." if record.get("currency") else None
    if intent == "visa_requirements":
        return SRI_LANKA_FACTS["visa"] if is_sl else None
    if intent == "activities":
        return f"Things to do in {name}: {', '.join(split_list(record['activities']))}."
    return None


def compose_answer(intent: str, hits: list[dict]) -> str:
    """Write a helpful answer for ``intent`` from the retrieved documents only.

    Args:
        intent: The predicted intent of the query.
        hits: Retrieved documents, best first (may be empty).

    Returns:
        The answer text, naming the places it draws on, or an honest "I don't know".
    """
    if not hits:
        return (
            "I couldn't find a destination in my knowledge base that matches that. "
            "Try naming a place or describing what you'd like (beaches, wildlife, hiking, culture...)."
        )
    top = hits[0]
    if intent in ("destination_recommendation", "itinerary_planning"):
        lines = [f"{i}. {_describe(doc)}" for i, doc in enumerate(hits, start=1)]
        lead = (
            "Here are places that fit:"
            if intent == "destination_recommendation"
            else ("A route could take in these places:")
        )
        return "\n".join([lead, *lines])
    if intent in ("destination_info", "accommodation") or intent not in _FIELD_INTENTS:
        answer = _describe(top)
        highlights = top["record"].get("top_attractions") or top["record"].get("highlights", "")
        if highlights:
            answer += f" Highlights: {', '.join(split_list(highlights))}."
        if intent == "accommodation":
            answer = "I don't have hotel listings, but here is what I know about the area. " + answer
        return answer
    fact = _field_answer(top, intent)
    if fact is None:
        return (
            f"I don't know that for {top['name']}: my knowledge base has no reliable data on it. "
            "Please check an official source. What I do know: " + _describe(top)
        )
    if fact in SRI_LANKA_FACTS.values():
        return fact  # a country-level fact: no single place is its source
    return f"{fact} (Source: {top['name']}, {top['location']}.)"


_FIELD_INTENTS = {
    "best_time_to_visit", "weather", "budget_planning", "transportation", "food_and_cuisine",
    "safety_and_health", "currency_exchange", "visa_requirements", "activities",
}  # fmt: skip
