"""A plain FastAPI app with pydantic models, the kind `fieldseal init --openapi` reads: its
/openapi.json names sensitive properties by name (ssn, password, phone, date_of_birth,
card_number) and by format (pydantic's EmailStr is `format: email`), next to harmless ones
(name, street, holder). Its own /docs, /redoc and /openapi.json stay FastAPI's defaults."""
from datetime import date
from typing import Optional

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, EmailStr

app = FastAPI(title="fieldseal init test app")


class Address(BaseModel):
    street: str
    phone: str


class UserIn(BaseModel):
    name: str
    email: EmailStr
    password: str
    ssn: str
    date_of_birth: date
    phone: Optional[str] = None


class UserOut(BaseModel):
    id: int
    name: str
    email: EmailStr
    ssn: str
    date_of_birth: date
    phone: str
    address: Address


class Contact(BaseModel):
    name: str
    email: Optional[EmailStr] = None


class PaymentMethod(BaseModel):
    holder: str
    card_number: str


USERS = {
    1: {
        "id": 1,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "ssn": "123-45-6789",
        "date_of_birth": "1815-12-10",
        "phone": "+44 20 7946 0958",
        "address": {"street": "12 St James's Square", "phone": "+44 20 7946 0000"},
    }
}


@app.get("/api/users/{user_id}", response_model=UserOut)
async def get_user(user_id: int):
    if user_id not in USERS:
        raise HTTPException(status_code=404, detail="no such user")
    return USERS[user_id]


@app.post("/api/users", response_model=UserOut, status_code=201)
async def create_user(user: UserIn):
    new_id = max(USERS) + 1
    record = {
        "id": new_id,
        **user.model_dump(mode="json", exclude={"password"}),
        "phone": user.phone or "",
        "address": {"street": "", "phone": ""},
    }
    USERS[new_id] = record
    return record


@app.get("/api/contacts", response_model=list[Contact])
async def contacts():
    return [{"name": "Ada Lovelace", "email": "ada@example.com"}, {"name": "Charles Babbage"}]


@app.get("/api/users/{user_id}/payment", response_model=PaymentMethod)
async def payment(user_id: int):
    return {"holder": "Ada Lovelace", "card_number": "4111111111111111"}
